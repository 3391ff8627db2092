"""A customer-support agent with tools (order lookup, refund), heard-only memory and warm transfer."""
