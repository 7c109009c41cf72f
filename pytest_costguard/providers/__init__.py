"""Provider adapters: how each SDK's calls reach the provider-neutral `CostGuard`."""
