export {
  ASSERTION_TYP,
  type VerifiedAssertion,
  type VerifyAssertionOptions,
  verifyAssertion,
} from './verify-assertion.js';
