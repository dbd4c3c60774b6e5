import { afterAll, beforeAll, describe, inject } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import { AuditStore } from '../store/audit-store.js';
import { migrate } from '../store/migrations.js';
import { openPglite, type SqlClient } from '../store/sql-client.js';
import { createTestDatabase } from './test-database.js';

/**
 * A fresh database on the suite's PostgreSQL with an AuditStore opened on it for the enclosing describe block
 * (beforeAll/afterAll); read `store` and `url` inside the tests.
 */
export function useTestStore(): { readonly store: AuditStore; readonly url: string } {
  let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let store: AuditStore | undefined;
  beforeAll(async () => {
    db = await createTestDatabase(inject('pg'), ROLES.superuser);
    store = await AuditStore.open({ url: db.url, rules: schemaV1Rules });
  });
  afterAll(async () => {
    await store?.close();
    await db?.drop();
  });
  return {
    get store() {
      if (!store) throw new Error('useTestStore: the store is opened in beforeAll');
      return store;
    },
    get url() {
      if (!db) throw new Error('useTestStore: the database is created in beforeAll');
      return db.url;
    },
  };
}

/**
 * Runs `suite` twice, as `<what> in the PostgreSQL store` (a fresh database on the suite's PostgreSQL) and `<what> in
 * the embedded store (PGlite)`, each migrated: for store code that must behave alike on both.
 */
export function onBothStores(what: string, suite: (db: () => SqlClient) => void): void {
  describe(`${what} in the PostgreSQL store`, () => {
    const t = useTestStore();
    suite(() => t.store.db);
  });
  describe(`${what} in the embedded store (PGlite)`, () => {
    let db: SqlClient | undefined;
    beforeAll(async () => {
      db = await openPglite();
      await migrate(db);
    }, 60_000);
    afterAll(async () => {
      await db?.close();
    });
    suite(() => {
      if (!db) throw new Error('onBothStores: the embedded store is opened in beforeAll');
      return db;
    });
  });
}
