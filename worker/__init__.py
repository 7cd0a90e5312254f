"""The analysis worker (`python -m worker`): pulls job messages from JetStream, runs the
analyzer, and reports every transition to the archive.

Reading order: ``__main__`` (signals) → ``app`` (wiring) → ``consumer`` (fetch loop, one task
per held message) → ``job_runner`` (one message: StartJob, analyse, report, then ack/term/nak)
→ ``heartbeat`` (in-progress acks and archive heartbeats) → ``archive_client`` (typed RPCs);
``advisories`` handles JetStream's max-deliveries advisory; ``analyzers`` is the analysis.

Design choices:

* **Threads, not processes, for the analyzer.** It is pure Python that runs in milliseconds
  (see bench/), so a thread pool of ``ASSAY_WORKER_CONCURRENCY`` keeps the event loop free for
  heartbeats without pickling protobufs to another process. A run past
  ``ASSAY_ANALYSIS_TIMEOUT`` is abandoned (its thread cannot be killed; its result is dropped).
* **A transient failure hands the message back for a new attempt.** The nak delay is at least
  the lease plus one heartbeat, so the redelivery's StartJob finds the lease expired and takes
  the job over as attempt n+1; the archive counts attempts, and the worker fails the job
  (ATTEMPTS_EXHAUSTED) when the failing attempt was the last. Delays grow 1, 2, 4 … s up to
  60 s. Archive outages are retried in place (the heartbeat keeps the message) instead, so
  they do not use up deliveries.
* **max_deliver = 2 × ASSAY_MAX_ATTEMPTS + 1**: one delivery per attempt, one for the start
  that finds the last attempt expired, and as many again for deliveries that start nothing
  (a redelivery that meets a live lease is naked until that lease could have expired).
"""
