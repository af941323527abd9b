"""Test features built on the engine: broken vassals, the isolation assertion, coverage inside vassals."""
