// aedes-persistence-redis ships no types; the cluster takes its factory as redis.ts's ClusterModules describes it.
declare module 'aedes-persistence-redis' {
  const factory: (options: Record<string, unknown>) => unknown;
  export default factory;
}
