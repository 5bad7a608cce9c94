"""The sliding-window demo (`cei demo sliding-window`), in one room.

- `sliding-window.yml` (with `scripts/`): the demo plan, shipped as package data;
- `stream`: the input CSV, the transform's process definition, the stream that drives it;
- `sliding_window` and `worker`: the transform, and the process that runs it on an engine;
- `messaging`: the Bus, JSON documents on queues in batches, over `sqlitequeue` (the embedded
  transport) or `amqpbus` (RabbitMQ).

Nothing here imports anything heavy at package import.
"""

from pathlib import Path

DEMO_PLAN = Path(__file__).resolve().parent / "sliding-window.yml"
