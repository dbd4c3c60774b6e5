/**
 * Compile-time checks that the types derived from the schemas are what code expects. `tsc -b` fails if a schema
 * change alters them; there is no runtime content.
 */
import type { DatabaseAccessPolicySpec, PolicyAction, PolicyRule } from './access-policy-schema.js';
import type { MaskingRuleSpec, MaskingStrategyType } from './masking-rule-schema.js';
import type { Equals } from './schema-types.js';

type Assert<T extends true> = T;

export type SchemaTypeChecks = [
  Assert<Equals<PolicyAction, 'allow' | 'deny' | 'review' | 'dryrun'>>,
  Assert<Equals<DatabaseAccessPolicySpec['defaultAction'], PolicyAction>>,
  Assert<Equals<DatabaseAccessPolicySpec['database']['port'], number>>,
  Assert<Equals<DatabaseAccessPolicySpec['database']['sslMode'], 'disable' | 'require' | 'verify-ca' | 'verify-full'>>,
  Assert<Equals<DatabaseAccessPolicySpec['database']['channelBinding'], 'disable' | 'prefer' | 'require'>>,
  Assert<Equals<DatabaseAccessPolicySpec['role'], string | undefined>>,
  Assert<Equals<DatabaseAccessPolicySpec['suspend'], boolean | undefined>>,
  Assert<Equals<DatabaseAccessPolicySpec['guardrails']['maxRowsAffected'], number | undefined>>,
  Assert<Equals<PolicyRule['tables'], string[] | undefined>>,
  Assert<Equals<DatabaseAccessPolicySpec['guardrails']['blockDDL'], boolean>>,
  Assert<Equals<DatabaseAccessPolicySpec['guardrails']['statementTimeout'], string | undefined>>,
  Assert<Equals<DatabaseAccessPolicySpec['audit']['failMode'], 'closed' | 'open'>>,
  Assert<
    Equals<
      DatabaseAccessPolicySpec['guardrails']['rateLimit'],
      | {
          statementsPerSecond: number;
          burst?: number;
          onExceed: 'deny' | 'delay';
          scope: 'pod' | 'policy';
          maxDelay: string;
        }
      | undefined
    >
  >,
  Assert<Equals<MaskingStrategyType, 'redact' | 'partial' | 'hash' | 'null' | 'email' | 'digits'>>,
  Assert<Equals<MaskingRuleSpec['columns'][number]['strategy']['keepLast'], number | undefined>>,
  Assert<Equals<NonNullable<DatabaseAccessPolicySpec['podSelector']['matchLabels']>, Record<string, string>>>,
];
