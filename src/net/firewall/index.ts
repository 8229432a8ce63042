/**
 * The firewall of the net layer: pure renderers from desired state to nftables text (weft's own
 * `inet weft` table) and to the iptables coexistence piece; applied by the kernel layer.
 */
export {
  IPT_CHAIN,
  type IptablesBatch,
  type IptablesSaved,
  renderIptables,
  renderIptablesRemoval,
} from './iptables.js';
export { type Plan, type PlannedNetwork, type PlannedPort, planFirewall } from './plan.js';
export {
  renderRemoval,
  renderTable,
  renderTables,
  requiredSysctls,
  type Sysctl,
  TABLE_FAMILY,
  TABLE_NAME,
} from './render.js';
export type { EndpointFw, FirewallState, NetworkFw, PortMapping, Proto } from './types.js';
