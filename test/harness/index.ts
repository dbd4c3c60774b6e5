export { MissingBinaryError, natsServerBinary, postgresBinDir } from './binaries.js';
export { type StartNatsOptions, startNats, type TestNats } from './nats.js';
export { freePort, waitForPort } from './ports.js';
export { ROLES, startPostgres, type TestPostgres } from './postgres.js';
export { makeCertificates, type TestCertificates } from './tls.js';
