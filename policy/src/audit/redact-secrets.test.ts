import { describe, expect, it } from 'vitest';
import { redactSecrets } from './redact-secrets.js';

describe('redactSecrets', () => {
  it.each([
    ["ALTER ROLE app PASSWORD 'hunter2'", "ALTER ROLE app PASSWORD '[REDACTED]'"],
    [
      "create user x with encrypted password 'it''s secret' login",
      "create user x with encrypted password '[REDACTED]' login",
    ],
    ["ALTER USER x PASSWORD E'a\\'b'", "ALTER USER x PASSWORD '[REDACTED]'"],
    ['ALTER ROLE x PASSWORD $q$hunter2$q$ VALID UNTIL', "ALTER ROLE x PASSWORD '[REDACTED]' VALID UNTIL"],
    [
      "SELECT * FROM dblink('host=db user=u password=hunter2 dbname=x', 'select 1')",
      "SELECT * FROM dblink('host=db user=u password=[REDACTED] dbname=x', 'select 1')",
    ],
    ["SELECT dblink_connect('postgresql://u:hunter2@db/x')", "SELECT dblink_connect('postgresql://u:[REDACTED]@db/x')"],
    [
      "CREATE USER MAPPING FOR me SERVER s OPTIONS (user 'u', password 'hunter2')",
      "CREATE USER MAPPING FOR me SERVER s OPTIONS (user 'u', password '[REDACTED]')",
    ],
  ])('%s', (sql, want) => {
    const out = redactSecrets(sql);
    expect(out).toBe(want);
    expect(out).not.toContain('hunter2');
  });

  it('leaves ordinary SQL untouched (same string)', () => {
    const sql = "SELECT email FROM customers WHERE note = 'password reset'";
    expect(redactSecrets('SELECT 1')).toBe('SELECT 1');
    expect(redactSecrets(sql)).toBe(sql);
  });
});
