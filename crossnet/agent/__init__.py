"""The probe agent: one program for every provider (stdlib + dnspython), so lab and kind
measure the same way.

It serves a TCP and a UDP echo that answer with the source address they saw, and a control
API (HTTP/JSON, `POST /probe`) that runs a batch of probes concurrently and reports one
result per probe. Probes never judge; they report what happened.

It runs as root, so the control API says who may ask and bounds what may be asked (control.py:
0600 unix socket + SO_PEERCRED, optional `--token-file` checked against `X-Crossnet-Token`; the
TCP control port without a token file authenticates nobody), checks every probe spec before any
runs (validate.py), and never repeats what a peer that is not crossnet's echo sent (core.py).

This package must not import the rest of crossnet: on kind it ships alone as a zipapp.
"""

from crossnet.agent.core import PROBE_PROTOCOLS, run_probe, run_probes

__all__ = ["PROBE_PROTOCOLS", "run_probe", "run_probes"]
