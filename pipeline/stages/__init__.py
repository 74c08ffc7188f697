"""Layer 5, stages: one module per `pipeline` command (prepare, baseline, train, zeroshot, evaluate, predict, export,
runs/promote, bench), each a plain function the CLI and the tests call."""
