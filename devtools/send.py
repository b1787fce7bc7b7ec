"""`make send`: the sample webhook stream into the stack `make up` runs.

Signed deliveries as Meta sends them (texts in English, Spanish and Portuguese, an image with a
caption, a redelivery, one forged signature) go to the stack's web process, which runs the
whole loop; once the replies are out, a read and a delivered status (in that order) follow for
one of them. Needs the stack's settings (`make send` sources var/stack/env) and a business on
Meta's test phone-number id (`make up` adds the sample one to an empty database). Prints what
became of the stream and exits 1 if anything is unaccounted for.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from devtools import meta
from devtools.loop import LoopError, WebhookStream, print_rows, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make send", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=120, help="how long to wait for each stage (seconds)")
    parser.add_argument(
        "--to-whatsapp",
        action="store_true",
        help="send even though the stack replies through the real Cloud API (to the sample's made-up numbers)",
    )
    args = parser.parse_args(argv)
    missing = [name for name in ("DATABASE_URL", "SECRET_KEY", "WHATSAPP_APP_SECRET") if not os.environ.get(name)]
    if missing:
        print(f"make send: {', '.join(missing)} not set; run it as `make send` with the stack up", file=sys.stderr)
        return 2
    if not os.environ.get("STACK_STAND_IN_URL") and not args.to_whatsapp:
        print(
            "make send: this stack replies through the real WhatsApp Cloud API (WHATSAPP_ACCESS_TOKEN is set),"
            " and the sample stream's customers are made-up numbers; `make send ARGS=--to-whatsapp` sends anyway",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from leads.models import Business

    if not Business.objects.filter(phone_number_id=meta.PHONE_NUMBER_ID, is_active=True).exists():
        print(
            f"make send: no active business has the phone-number id {meta.PHONE_NUMBER_ID} the sample stream is"
            " sent to; `make up ARGS=--sample-business` adds one to an empty database, or set it on yours in the admin",
            file=sys.stderr,
        )
        return 1
    web = os.environ.get("STACK_WEB_URL", "http://127.0.0.1:8000")
    stream = WebhookStream(web, os.environ["WHATSAPP_APP_SECRET"], timeout=args.timeout, failed_status=False)
    begin = time.monotonic()
    print(f"make send: POSTing the sample stream to {web}/webhooks/whatsapp/ ...", flush=True)
    try:
        report = stream.run()
    except LoopError as exc:
        print(f"make send: {exc}; is every process of the stack running?", file=sys.stderr)
        return 1
    print_rows(report.rows())
    wrong = problems(report, failed_status=False)
    if wrong:
        print("make send: " + "; ".join(wrong), file=sys.stderr)
        return 1
    print(f"make send: all {len(report.messages)} messages answered in {time.monotonic() - begin:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
