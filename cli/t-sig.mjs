import { PGlite } from '@electric-sql/pglite';
process.once('SIGTERM', () => console.log('got TERM'));
console.log('before', process.listenerCount('SIGTERM'), process.listenerCount('SIGINT'));
const db = await PGlite.create();
console.log('after', process.listenerCount('SIGTERM'), process.listenerCount('SIGINT'), process.listeners('SIGTERM').map(String));
await db.close();
