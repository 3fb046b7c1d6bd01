"""Online top-k retrieval over HTTP: the run's query tower + its published index, micro-batched.

    python -m serving --run runs/demo --port 8080          (``twotower serve --run RUN`` once wired)
    curl -s localhost:8080/topk -d '{"user_id": "196", "k": 10}'

Modules: config (ServingConfig), requests (validation), users (known users from the run's data),
tower_inputs (requests → query-tower inputs), state (a loaded index version), batcher (MicroBatcher),
reloader (IndexWatcher), service (TopKService), app (HTTP server, ``serve``).
"""
