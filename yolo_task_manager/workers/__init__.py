"""Workers: one per device, the ultralytics bridge (offline env, training child), supervision."""
