export { gcra, MemoryRateLimitStore, type Quota, type RateDecision, type RateLimitStore } from './gcra.js';
