/**
 * Derives TypeScript types from the JSON Schemas in this folder, so the schema stays the single source of truth:
 * a field added to a schema appears in the type, and code using a removed field stops compiling.
 *
 * Covers the subset of JSON Schema the pgwarden schemas use (type, enum, properties, required, items,
 * additionalProperties, default). A property with a `default` is required in the derived type because
 * validation (ajv `useDefaults`) always fills it in: the types describe a *validated* object.
 */

type Simplify<T> = { [K in keyof T]: T[K] } & {};

type RequiredKeys<P, R> = {
  [K in keyof P]: K extends R ? K : P[K] extends { default: unknown } ? K : never;
}[keyof P];

type ObjectFrom<P, R> = Simplify<
  { -readonly [K in RequiredKeys<P, R>]: FromSchema<P[K]> } & {
    -readonly [K in Exclude<keyof P, RequiredKeys<P, R>>]?: FromSchema<P[K]>;
  }
>;

export type FromSchema<S> = S extends { enum: readonly (infer E)[] }
  ? E
  : S extends { type: 'string' }
    ? string
    : S extends { type: 'integer' | 'number' }
      ? number
      : S extends { type: 'boolean' }
        ? boolean
        : S extends { type: 'array'; items: infer I }
          ? FromSchema<I>[]
          : S extends { type: 'object'; properties: infer P }
            ? ObjectFrom<P, S extends { required: readonly (infer R)[] } ? R : never>
            : S extends { type: 'object'; additionalProperties: infer A }
              ? Record<string, FromSchema<A>>
              : unknown;

/** Compile-time equality, used by the type-level checks next to the schemas. */
export type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
