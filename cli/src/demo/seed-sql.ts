/**
 * The demo's schema: customers with the personal data an agent should never see in clear (email, phone, SSN,
 * card number, date of birth) and orders that reference them. Deterministic, synthetic values only: card numbers
 * are the networks' published test numbers, SSNs use the never-issued 9xx area.
 */
const FIRST = ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken', 'Margaret', 'Dennis'];
const LAST = [
  'Lovelace',
  'Hopper',
  'Turing',
  'Dijkstra',
  'Liskov',
  'Knuth',
  'Allen',
  'Thompson',
  'Hamilton',
  'Ritchie',
];
const CARDS = ['4111111111111111', '5555555555554444', '378282246310005', '6011111111111117', '4012888888881881'];
const PRODUCTS = ['keyboard', 'monitor', 'laptop stand', 'usb-c hub', 'desk lamp', 'headset'];

export const CUSTOMER_COUNT = 40;
/**
 * The role examples/analyst-readonly.yaml makes the sidecar SET ROLE to: reads the demo tables, and may change an
 * order's status, which the demo's policy holds for a person's approval first (run-demo.ts).
 */
export const ANALYST_ROLE = 'analytics_ro';
export const ORDER_COUNT = 120;

const quote = (s: string) => `'${s.replaceAll("'", "''")}'`;

export function seedSql(): string {
  const customers: string[] = [];
  for (let i = 1; i <= CUSTOMER_COUNT; i++) {
    const first = FIRST[i % FIRST.length];
    const last = LAST[(i * 7) % LAST.length];
    const email = `${first}.${last}${i}@example.com`.toLowerCase();
    const phone = `+1-202-555-${String(100 + i).padStart(4, '0')}`;
    const ssn = `9${String(10 + i).padStart(2, '0')}-${String(10 + ((i * 3) % 90)).padStart(2, '0')}-${String(1000 + i * 37).slice(-4)}`;
    const card = CARDS[i % CARDS.length];
    const born = `19${60 + (i % 40)}-${String(1 + (i % 12)).padStart(2, '0')}-${String(1 + (i % 28)).padStart(2, '0')}`;
    customers.push(
      `(${i}, ${quote(`${first} ${last}`)}, ${quote(email)}, ${quote(phone)}, ${quote(ssn)}, ${quote(card)}, ${quote(born)}, ${quote(['US', 'GB', 'DE', 'FR'][i % 4])})`,
    );
  }
  const orders: string[] = [];
  for (let i = 1; i <= ORDER_COUNT; i++) {
    const customer = 1 + ((i * 13) % CUSTOMER_COUNT);
    const cents = 999 + ((i * 7919) % 50000);
    const day = String(1 + (i % 28)).padStart(2, '0');
    orders.push(
      `(${i}, ${customer}, ${quote(PRODUCTS[i % PRODUCTS.length])}, ${(cents / 100).toFixed(2)}, '2026-0${1 + (i % 9)}-${day}', ${quote(['paid', 'shipped', 'refunded'][i % 3])})`,
    );
  }
  return `
CREATE TABLE customers (
  id          integer PRIMARY KEY,
  full_name   text NOT NULL,
  email       text NOT NULL UNIQUE,
  phone       text,
  ssn         text,
  card_number text,
  birth_date  date,
  country     text NOT NULL
);
CREATE TABLE orders (
  id          integer PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customers (id),
  product     text NOT NULL,
  amount      numeric(10, 2) NOT NULL,
  ordered_at  date NOT NULL,
  status      text NOT NULL
);
INSERT INTO customers VALUES
  ${customers.join(',\n  ')};
INSERT INTO orders VALUES
  ${orders.join(',\n  ')};
CREATE ROLE ${ANALYST_ROLE} NOLOGIN;
GRANT USAGE ON SCHEMA public TO ${ANALYST_ROLE};
GRANT SELECT ON customers, orders TO ${ANALYST_ROLE};
GRANT UPDATE (status) ON orders TO ${ANALYST_ROLE};
`;
}
