/**
 * Settings that change how PostgreSQL reads the statements that follow, or what an unqualified name means, in ways
 * the analysis cannot follow. The analysis lexes SQL as PostgreSQL does with standard_conforming_strings on and a
 * client encoding whose multibyte characters never contain ASCII bytes, and resolves names against the search_path
 * the sidecar pinned plus every list the session SET since. Any other value would make pgwarden judge a different
 * statement from the one PostgreSQL runs (`SELECT 'x\''; DELETE …` is one string constant to one and two statements
 * to the other), so such a change is denied whatever rule allows `set`.
 */

/** parse_bool's spellings of true (PostgreSQL accepts unique prefixes of true/yes, `on` and `1`, any case). */
const TRUE_SPELLINGS: ReadonlySet<string> = new Set(['t', 'tr', 'tru', 'true', 'y', 'ye', 'yes', 'on', '1']);

/**
 * Every name PostgreSQL accepts for an encoding that may be a server encoding (src/common/encnames.c,
 * pg_encname_tbl), as pg_char_to_encoding compares them: lower case, ASCII letters and digits only. The encodings
 * left out are the client-only ones (SJIS, SHIFT_JIS_2004, BIG5, GBK, UHC, GB18030, JOHAB and their aliases
 * mskanji, shiftjis, win932/936/949/950, windows932/936/949/950): their second bytes include 0x5C `\` and other
 * ASCII, so PostgreSQL, which converts the text before lexing it, would not see the quote or backslash pgwarden
 * sees. An allow-list, so a name this table does not know is denied rather than trusted.
 */
const SERVER_ENCODING_NAMES: ReadonlySet<string> = new Set([
  'abc',
  'alt',
  'euccn',
  'eucjis2004',
  'eucjp',
  'euckr',
  'euctw',
  'iso88591',
  'iso885910',
  'iso885913',
  'iso885914',
  'iso885915',
  'iso885916',
  'iso88592',
  'iso88593',
  'iso88594',
  'iso88595',
  'iso88596',
  'iso88597',
  'iso88598',
  'iso88599',
  'koi8',
  'koi8r',
  'koi8u',
  'latin1',
  'latin10',
  'latin2',
  'latin3',
  'latin4',
  'latin5',
  'latin6',
  'latin7',
  'latin8',
  'latin9',
  'muleinternal',
  'sqlascii',
  'tcvn',
  'tcvn5712',
  'unicode',
  'utf8',
  'vscii',
  'win',
  'win1250',
  'win1251',
  'win1252',
  'win1253',
  'win1254',
  'win1255',
  'win1256',
  'win1257',
  'win1258',
  'win866',
  'win874',
  'windows1250',
  'windows1251',
  'windows1252',
  'windows1253',
  'windows1254',
  'windows1255',
  'windows1256',
  'windows1257',
  'windows1258',
  'windows866',
  'windows874',
]);

/** pg_char_to_encoding's clean_encoding_name: `Shift_JIS`, `shift-jis` and `SHIFTJIS` are one name. */
function encodingKey(name: string): string {
  return name.replace(/[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]/g, '').toLowerCase();
}

/**
 * Why setting `setting` to `value` is unsafe, or undefined when it is safe. `value` is undefined when it is not a
 * constant (set_config with an expression), which cannot be checked.
 */
export function unsafeSettingValue(
  setting: string,
  value: string | undefined,
  spelling: 'SET' | 'set_config',
): string | undefined {
  let why: string;
  if (setting === 'standard_conforming_strings') {
    if (value !== undefined && TRUE_SPELLINGS.has(value.toLowerCase())) return undefined;
    why = 'pgwarden reads string literals as PostgreSQL does only while it is on';
  } else if (setting === 'client_encoding') {
    if (value !== undefined && SERVER_ENCODING_NAMES.has(encodingKey(value))) return undefined;
    why = 'in a client-only encoding PostgreSQL would not split statements where pgwarden splits them';
  } else return undefined;
  const shown = value === undefined ? 'a computed value' : `'${value.slice(0, 40)}'`;
  const what = spelling === 'SET' ? `SET ${setting} = ${shown}` : `set_config('${setting}', ${shown}, …)`;
  return `${what} (${why})`;
}
