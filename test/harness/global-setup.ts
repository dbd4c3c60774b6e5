import type { TestProject } from 'vitest/node';
import { startNats, type TestNats } from './nats.js';
import { startPostgres, type TestPostgres } from './postgres.js';

export interface SharedPostgres {
  host: string;
  port: number;
  database: string;
  socketDir: string;
  caFile: string;
  otherCaFile: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    pg: SharedPostgres;
    natsUrl: string;
  }
}

let pg: TestPostgres | undefined;
let nats: TestNats | undefined;

/** One PostgreSQL cluster and one nats-server for the whole run; tests that kill servers start their own. */
export async function setup(project: TestProject): Promise<void> {
  [pg, nats] = await Promise.all([startPostgres(), startNats()]);
  project.provide('pg', {
    host: pg.host,
    port: pg.port,
    database: pg.database,
    socketDir: pg.socketDir,
    caFile: pg.certs.caFile,
    otherCaFile: pg.certs.otherCaFile,
  });
  project.provide('natsUrl', nats.url);
}

export async function teardown(): Promise<void> {
  pg?.stop();
  await nats?.stop();
}
