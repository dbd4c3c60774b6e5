/**
 * Kubernetes label selectors, both shapes:
 * - the structured `LabelSelector` of object specs (matchLabels + matchExpressions), and
 * - the string form of the `labelSelector` query parameter (`a=b,c!=d,e in (x,y),!f`).
 * https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors
 */

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export type Labels = Record<string, string> | undefined;

/**
 * An empty selector ({}) matches everything; a missing one (undefined) matches nothing, as for
 * NetworkPolicy/PodDisruptionBudget semantics, so a policy without a podSelector never injects.
 */
export function selectorMatches(selector: LabelSelector | undefined | null, labels: Labels): boolean {
  if (!selector) return false;
  const have = labels ?? {};
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
    if (have[k] !== v) return false;
  }
  for (const req of selector.matchExpressions ?? []) {
    if (!requirementMatches(req, have)) return false;
  }
  return true;
}

function requirementMatches(req: LabelSelectorRequirement, labels: Record<string, string>): boolean {
  const present = Object.hasOwn(labels, req.key);
  switch (req.operator) {
    case 'In':
      return present && (req.values ?? []).includes(labels[req.key]);
    case 'NotIn':
      return !present || !(req.values ?? []).includes(labels[req.key]);
    case 'Exists':
      return present;
    case 'DoesNotExist':
      return !present;
    default:
      return false; // unknown operators fail closed
  }
}

/** Parses the query-string form into requirements; throws on syntax it does not understand. */
export function parseSelectorString(text: string): LabelSelectorRequirement[] {
  const out: LabelSelectorRequirement[] = [];
  // Split on commas that are not inside a parenthesised value set.
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (cur.trim() !== '') parts.push(cur);
  const forms: [RegExp, (m: RegExpMatchArray) => LabelSelectorRequirement][] = [
    [
      /^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/,
      (m) => ({
        key: m[1],
        operator: m[2] === 'in' ? 'In' : 'NotIn',
        values: m[3]
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean),
      }),
    ],
    [/^([\w./-]+)\s*!=\s*([\w./-]*)$/, (m) => ({ key: m[1], operator: 'NotIn', values: [m[2]] })],
    [/^([\w./-]+)\s*==?\s*([\w./-]*)$/, (m) => ({ key: m[1], operator: 'In', values: [m[2]] })],
    [/^!([\w./-]+)$/, (m) => ({ key: m[1], operator: 'DoesNotExist' })],
    [/^([\w./-]+)$/, (m) => ({ key: m[1], operator: 'Exists' })],
  ];
  for (const raw of parts) {
    const p = raw.trim();
    const hit = forms.map(([re, make]) => [p.match(re), make] as const).find(([m]) => m);
    if (!hit) throw new Error(`unable to parse label selector requirement "${p}"`);
    out.push(hit[1](hit[0]!));
  }
  return out;
}

/** Renders a structured selector in the query-string form, for list/watch calls. */
export function selectorToString(selector: LabelSelector): string {
  const parts = Object.entries(selector.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const r of selector.matchExpressions ?? []) {
    if (r.operator === 'Exists') parts.push(r.key);
    else if (r.operator === 'DoesNotExist') parts.push(`!${r.key}`);
    else parts.push(`${r.key} ${r.operator === 'In' ? 'in' : 'notin'} (${(r.values ?? []).join(',')})`);
  }
  return parts.join(',');
}
