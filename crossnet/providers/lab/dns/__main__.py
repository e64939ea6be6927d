"""`python -m crossnet.providers.lab.dns`: see cli.py."""

from crossnet.providers.lab.dns.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
