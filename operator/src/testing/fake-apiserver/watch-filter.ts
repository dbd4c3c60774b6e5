import { type LabelSelectorRequirement, selectorMatches } from '../../core/label-selector.js';
import type { Json } from './field-ownership.js';
import type { ResourceType } from './resource-types.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
export interface WatchEvent {
  type: WatchEventType;
  object: Json;
}

/** What a filtered watch sees of one change (as the apiserver's watch cache filters: an object leaving the selector is reported DELETED). */
export function filteredEvent(
  f: WatchFilter,
  h: { type: WatchEventType; object: Json; old?: Json },
): WatchEvent | undefined {
  const now = matchesFilter(f, h.object);
  if (h.type !== 'MODIFIED' || !h.old) return now ? { type: h.type, object: structuredClone(h.object) } : undefined;
  const before = matchesFilter(f, h.old);
  if (now) return { type: before ? 'MODIFIED' : 'ADDED', object: structuredClone(h.object) };
  return before ? { type: 'DELETED', object: structuredClone(h.object) } : undefined;
}

export interface WatchFilter {
  rt: ResourceType;
  namespace?: string;
  selector: LabelSelectorRequirement[];
  name?: string; // fieldSelector metadata.name=
}

export interface Watcher extends WatchFilter {
  send(ev: WatchEvent): void;
}

export function matchesFilter(f: WatchFilter, obj: Json): boolean {
  if (f.namespace && obj.metadata?.namespace !== f.namespace) return false;
  if (f.name && obj.metadata?.name !== f.name) return false;
  return selectorMatches({ matchExpressions: f.selector }, obj.metadata?.labels);
}
