export {
  hourOfWeek,
  type RiskAssessment,
  type RiskDevice,
  RiskEngine,
  type RiskOutcome,
  type RiskProfile,
  type RiskProfileStore,
  type RiskSettings,
  type RiskSubject,
  type Signal,
} from './engine.js';
export { distanceKm, type GeoInfo, GeoIp } from './geo.js';
export { parseThreatList, ThreatIntel, type ThreatListSource } from './threat.js';
export { PrefixSet } from './trie.js';
export { SlidingCounter } from './velocity.js';
