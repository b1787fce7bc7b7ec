"""`manage.py classify`: the reference classifier as a process, or `--evaluate FILE` to measure it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier import evaluation
from classifier.backends.base import load_backend
from classifier.catalog import SAMPLE_CATALOG, sample_catalog
from classifier.runner import ClassifyRunner


class Command(BaseCommand):
    help = (
        "Consume ai.process.request (KAFKA_REQUEST_TOPIC) in the CLASSIFIER_GROUP_ID group and publish one "
        "ai.process.result event per request, classified by CLASSIFIER_BACKEND. Offsets are committed only "
        "after the results were acknowledged. SIGTERM/SIGINT finish the batch in hand and exit. "
        "With --evaluate FILE, measure the backend on a labelled JSON-lines set instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topic", help="Request topic (default: KAFKA_REQUEST_TOPIC).")
        parser.add_argument("--result-topic", help="Result topic (default: KAFKA_RESULT_TOPIC).")
        parser.add_argument("--group-id", help="Consumer group (default: CLASSIFIER_GROUP_ID).")
        parser.add_argument("--max-messages", type=int, help="Exit after consuming this many requests.")
        parser.add_argument(
            "--idle-exit", type=float, metavar="SECONDS", help="Exit after this long with nothing to read."
        )
        parser.add_argument(
            "--evaluate",
            metavar="FILE",
            help="Measure the backend on a labelled JSON-lines set (the shipped one: classifier/data/labelled.jsonl).",
        )
        parser.add_argument(
            "--catalog", metavar="FILE", help=f"Catalog for --evaluate (default: {SAMPLE_CATALOG.name})."
        )
        parser.add_argument("--json", action="store_true", help="With --evaluate: one JSON document.")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = load_backend()
        if options["evaluate"]:
            self.evaluate(backend, Path(options["evaluate"]), options["catalog"], as_json=options["json"])
            return
        if options["max_messages"] is not None and options["max_messages"] < 1:
            raise CommandError("--max-messages must be at least 1", returncode=2)
        runner = ClassifyRunner(
            backend,
            topic=options["topic"],
            result_topic=options["result_topic"],
            group_id=options["group_id"],
            max_messages=options["max_messages"],
            idle_exit=options["idle_exit"],
        )
        runner.install_signal_handlers()
        stats = runner.run()
        self.stdout.write(f"classify: {stats.summary()}")

    def evaluate(self, backend: Any, path: Path, catalog_path: str | None, *, as_json: bool) -> None:
        try:
            examples = evaluation.load(path)
            catalog = sample_catalog(Path(catalog_path)) if catalog_path else sample_catalog()
        except (OSError, evaluation.LabelledSetError, ValueError, KeyError) as exc:
            raise CommandError(f"cannot evaluate: {exc}", returncode=2) from None
        reports = evaluation.splits(evaluation.run(examples, backend, catalog))
        if as_json:
            document = {"model": backend.model_name, "file": str(path), "splits": [r.as_json() for r in reports]}
            self.stdout.write(json.dumps(document, indent=2))
        else:
            self.stdout.write(evaluation.render(reports, backend.model_name, str(path)))
