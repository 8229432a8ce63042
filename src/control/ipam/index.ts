/**
 * The pure IPAM core: canonical subnet configs, round-robin allocation over a small store
 * interface, and subnet picking from address pools. No I/O; the daemon supplies the store.
 */
export {
  type AllocateOptions,
  addressOf,
  allocate,
  type Pool,
  type ReleaseSelector,
  release,
} from './allocator.js';
export {
  type AddressPool,
  checkSubnetFree,
  DEFAULT_POOLS,
  DOCKER_DEFAULT_BRIDGE,
  type InUseNet,
  type PickSubnetOptions,
  parseAddressPool,
  pickSubnet,
} from './pools.js';
export { type Allocation, type IpamStore, MemoryIpamStore } from './store.js';
export {
  type CanonicalSubnet,
  canonicalSubnet,
  formatRange,
  type IPRange,
  isReserved,
  rangeContains,
  reservedReason,
  type SubnetConfig,
  usableRange,
} from './subnet.js';
