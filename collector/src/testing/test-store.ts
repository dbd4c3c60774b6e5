import { afterAll, beforeAll, inject } from 'vitest';
import { ROLES } from '../../../test/harness/postgres.js';
import { schemaV1Rules } from '../chain/chain-rules.js';
import { AuditStore } from '../store/audit-store.js';
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
