export { IdentityConfigError, IdentityError, type IdentityReason } from '@pgwarden/policy/oidc';

/** SQLSTATE 28P01 invalid_password: what PostgreSQL itself sends for a refused password (Appendix A, class 28). */
export const INVALID_PASSWORD = '28P01';

/**
 * SQLSTATE 28000 invalid_authorization_specification: what PostgreSQL sends when an external authentication
 * method fails (LDAP, RADIUS), an unreachable server included. An identity provider that cannot be asked says
 * nothing about the token, so the client is not told its password is wrong.
 */
export const INVALID_AUTHORIZATION = '28000';
