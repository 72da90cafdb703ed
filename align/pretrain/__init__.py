"""Multi-phase progressive pretraining: phase plan, mixture ledger, packing, schedule, recovery."""
