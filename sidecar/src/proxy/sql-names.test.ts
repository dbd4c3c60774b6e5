import { describe, expect, it } from 'vitest';
import type { StatementDetail } from './hooks.js';
import { kindOfKeyword, NamesTouched, notStarted, removedBy } from './sql-names.js';

const st = (text: string, kind?: string): StatementDetail => ({ text, kind });
/** The CommandComplete tags of the statements that completed before the error. */
const done = (...tags: (string | undefined)[]) => tags;

describe('removedBy: what the completed statements of a failed Query may have removed', () => {
  const query = [st('DEALLOCATE a', 'deallocate'), st('CLOSE "Cur"', 'cursor'), st('SELECT 1/0', 'select')];

  it('reads the names of the statements whose CommandComplete came, and only theirs', () => {
    const one = removedBy(query, done('DEALLOCATE'))!;
    expect([one.statement('a'), one.portal('Cur'), one.statement('b')]).toEqual([true, false, false]);
    const two = removedBy(query, done('DEALLOCATE', 'CLOSE CURSOR'))!;
    expect([two.statement('a'), two.portal('Cur'), two.portal('cur')]).toEqual([true, true, false]);
  });

  it('ALL or a name it cannot read stands for every name of its kind', () => {
    const all = removedBy([st('DEALLOCATE ALL', 'deallocate'), st('SELECT 1/0', 'select')], done('DEALLOCATE ALL'))!;
    expect([all.statement('x'), all.portal('x')]).toEqual([true, false]);
    const odd = removedBy([st('CLOSE /* c */ x', 'cursor'), st('SELECT 1/0', 'select')], done('CLOSE CURSOR'))!;
    expect(odd.portal('anything')).toBe(true);
  });

  it('cannot tell (undefined) when the tags do not follow the kinds, or kinds or statements are missing', () => {
    expect(removedBy(query, done('SELECT 1'))).toBeUndefined();
    expect(removedBy(query, done('DEALLOCATE', 'FETCH 1'))).not.toBeUndefined();
    expect(removedBy([st('SELECT 1', 'select'), st('DEALLOCATE a', 'deallocate')], done('DEALLOCATE'))).toBeUndefined();
    expect(removedBy([st('DEALLOCATE a'), st('SELECT 1/0')], done('DEALLOCATE'))).toBeUndefined();
    expect(removedBy([st('SELECT 1', 'select'), st('SELECT 1/0', 'select')], done('DO'))).toBeUndefined();
    expect(removedBy([st('DO $$ $$', 'do'), st('SELECT 1/0', 'select')], done('SELECT 1'))).toBeUndefined();
    expect(removedBy(query.slice(0, 1), done('DEALLOCATE'))).toBeUndefined();
    expect(removedBy(query, done(undefined))).toBeUndefined();
  });

  it('procedural code that ran, completed or failed, may have closed any portal, and with EXECUTE removed any statement', () => {
    const fail = st('SELECT 1/0', 'select');
    const ran = removedBy([st('DO $$BEGIN CLOSE c; END$$', 'do'), fail], done('DO'))!;
    expect([ran.allPortals, ran.allStatements]).toEqual([true, false]);
    const exec = removedBy([st("DO $$BEGIN EXECUTE 'DEALL' || 'OCATE a'; END$$", 'do'), fail], done('DO'))!;
    expect([exec.allPortals, exec.allStatements]).toEqual([true, true]);
    const failed = removedBy([st('CALL p()', 'call'), st('DEALLOCATE a', 'deallocate')], done())!;
    expect([failed.allPortals, failed.allStatements, failed.statement('a')]).toEqual([true, false, false]);
    // PL/pgSQL runs a DEALLOCATE of its own (SPI): the name is gone, whether the DO completed or failed after it.
    const direct = removedBy([st('DO $$BEGIN DEALLOCATE a; END$$', 'do'), fail], done('DO'))!;
    expect([direct.allStatements, direct.statement('a'), direct.statement('b')]).toEqual([false, true, false]);
    const midway = removedBy([st('DO $$BEGIN DEALLOCATE a; PERFORM 1/0; END$$', 'do')], done())!;
    expect(midway.statement('a')).toBe(true);
    // Behind the failed statement it never ran.
    const behind = removedBy([fail, st("DO $$BEGIN EXECUTE 'x'; END$$", 'do')], done())!;
    expect([behind.allPortals, behind.allStatements]).toEqual([false, false]);
  });

  it('a statement PostgreSQL refused before it started (25P02 from postgres.c) removed nothing, procedural or not', () => {
    const query = [st('DEALLOCATE a', 'deallocate'), st("DO $$BEGIN EXECUTE 'x'; END$$", 'do')];
    const refused = removedBy(query, done('DEALLOCATE'), false)!;
    expect([refused.allPortals, refused.allStatements, refused.statement('a')]).toEqual([false, false, true]);
    const inTx = new Map([
      ['C', '25P02'],
      ['F', 'postgres.c'],
    ]);
    expect(notStarted(inTx)).toBe(true);
    // The same SQLSTATE raised by user code (RAISE SQLSTATE '25P02') comes from PL/pgSQL's source: it ran.
    expect(notStarted(new Map([...inTx, ['F', 'pl_exec.c']]))).toBe(false);
    expect(notStarted(new Map([...inTx, ['C', '22012']]))).toBe(false);
  });

  it('kinds from first keywords, for a Query without a parser', () => {
    expect(
      ['deallocate', 'declare', 'close', 'fetch', 'move', 'discard', 'do', 'call', 'select', ''].map(kindOfKeyword),
    ).toEqual(['deallocate', 'cursor', 'cursor', 'cursor', 'cursor', 'discard', 'do', 'call', 'other', 'other']);
    const q = [st('SELECT 1', 'other'), st('CLOSE c', 'cursor'), st('SELECT 1/0', 'other')];
    expect(removedBy(q, done('SELECT 1', 'CLOSE CURSOR'))!.portal('c')).toBe(true);
    expect(removedBy(q, done('SELECT 1', 'DEALLOCATE'))).toBeUndefined();
    expect(removedBy(q, done('CLOSE CURSOR', 'CLOSE CURSOR'))).toBeUndefined();
  });

  it('NamesTouched folds plain names to lower case and keeps quoted ones', () => {
    const t = new NamesTouched();
    t.add('DEALLOCATE PREPARE Foo; CLOSE "Bar"');
    expect([t.statement('foo'), t.portal('Bar'), t.portal('bar')]).toEqual([true, true, false]);
  });

  it('DISCARD PLANS, TEMP, TEMPORARY and SEQUENCES name nothing; DISCARD ALL, or what it cannot read, every name', () => {
    const other = new NamesTouched();
    other.add('DISCARD PLANS; discard temp; DISCARD TEMPORARY; DISCARD SEQUENCES');
    expect([other.statement('plans'), other.statement('temp'), other.portal('temporary'), other.allPortals]).toEqual([
      false,
      false,
      false,
      false,
    ]);
    for (const sql of ['DISCARD ALL', 'DISCARD /* x */ TEMP']) {
      const all = new NamesTouched();
      all.add(sql);
      expect([all.allStatements, all.allPortals], sql).toEqual([true, true]);
    }
  });
});
