import type { StatementKind } from '../api/access-policy-schema.js';
import type { Node } from './parser.js';

const KINDS: Record<string, StatementKind> = {
  SelectStmt: 'select',
  InsertStmt: 'insert',
  UpdateStmt: 'update',
  DeleteStmt: 'delete',
  MergeStmt: 'merge',
  TruncateStmt: 'delete',
  CopyStmt: 'copy',
  CallStmt: 'call',
  DoStmt: 'do',
  TransactionStmt: 'transaction',
  VariableSetStmt: 'set',
  VariableShowStmt: 'show',
  ExplainStmt: 'explain',
  PrepareStmt: 'prepare',
  ExecuteStmt: 'execute',
  DeallocateStmt: 'deallocate',
  DeclareCursorStmt: 'cursor',
  FetchStmt: 'cursor',
  ClosePortalStmt: 'cursor',
  LockStmt: 'lock',
  ListenStmt: 'listen',
  UnlistenStmt: 'listen',
  NotifyStmt: 'notify',
  VacuumStmt: 'maintenance',
  ClusterStmt: 'maintenance',
  ReindexStmt: 'maintenance',
  RefreshMatViewStmt: 'maintenance',
  GrantStmt: 'dcl',
  GrantRoleStmt: 'dcl',
  CreateRoleStmt: 'dcl',
  AlterRoleStmt: 'dcl',
  AlterRoleSetStmt: 'dcl',
  DropRoleStmt: 'dcl',
  AlterDefaultPrivilegesStmt: 'dcl',
  ReassignOwnedStmt: 'dcl',
  DropOwnedStmt: 'dcl',
  CreateUserMappingStmt: 'dcl',
  AlterUserMappingStmt: 'dcl',
  DropUserMappingStmt: 'dcl',
  CheckPointStmt: 'utility',
  LoadStmt: 'utility',
  DiscardStmt: 'discard',
  AlterSystemStmt: 'utility',
  ConstraintsSetStmt: 'transaction',
};

/**
 * The kind of a parse-tree statement node. Anything not listed (CREATE/ALTER/DROP/COMMENT/SECURITY LABEL...) is
 * DDL, so a statement type added in a later PostgreSQL release falls under blockDDL rather than slipping through.
 */
export function kindOfNode(type: string, body: Node): StatementKind {
  if (type === 'SelectStmt' && body.intoClause) return 'ddl'; // SELECT ... INTO creates a table
  return Object.hasOwn(KINDS, type) ? KINDS[type] : 'ddl';
}

/** The single `{ Type: body }` entry of a node. */
export function unwrap(node: Node): [string, Node] {
  for (const k in node) return [k, node[k] as Node];
  return ['', {}];
}
