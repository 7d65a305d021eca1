# Nothing set: every setting takes its default, no providers, no routes.
