"""The cluster API: what a write passes through before the store (defaults,
validation) and the selectors that filter lists and watches."""
