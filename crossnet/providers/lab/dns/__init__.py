"""The lab's cluster DNS server: a small CoreDNS that consumes a real Corefile.

Each emulated cluster runs one of these inside a network namespace, where a kind cluster runs
its CoreDNS pod. It reads the *same* Corefile text the kind provider patches into the CoreDNS
ConfigMap (parsed by `crossnet.plumbing.corefile`), so the Corefile plumbing is exercised for
real, and answers from a records file the lab writes (what the Kubernetes API holds on kind).

    python -m crossnet.providers.lab.dns --corefile PATH --records PATH [--ready PATH]
                                         [--listen ADDR] [--port N] [--forward-timeout S]

Corefile plugins implemented (exactly these, run in CoreDNS's plugin.cfg order, not in Corefile
order; a server block is chosen by the most specific zone, and no block means REFUSED):

    errors       log why a query failed (the server, server.py)
    cache        positive and negative cache; `success`, `denial`, `disable success|denial ZONES`
    header       `[query|response] set|clear aa|ra|rd ...`: rewrite the flags of the query (for
                 the plugins after it) or of the response (the cache keeps the rewritten answer)
    hosts        inline entries and a hosts file beside the Corefile (never /etc/hosts); `ttl`,
                 `no_reverse`, `fallthrough`
    kubernetes   Service, endpoint, pod and PTR names from the records file; `ttl`,
                 `pods disabled|insecure|verified`, `fallthrough`, `namespaces`
    multicluster MCS ServiceImports under its zone (clusterset.local), from the records'
                 `serviceimports`, as coredns/multicluster (Karmada's) answers them: A, SRV,
                 headless per-pod names, NXDOMAIN for what is not imported; `fallthrough`,
                 `noendpoints`. A zone the block's kubernetes plugin serves is an error.
    lighthouse   Submariner Lighthouse's clusterset.local names, from the records' `clusterset`
    forward      the client's own query (EDNS and all) to IP upstreams over the client's transport;
                 `except`, `force_tcp`, `prefer_udp`, `policy`. `forward . /etc/resolv.conf`
                 never reads the host's resolv.conf: traffic stays inside the lab, so such names
                 get SERVFAIL at once.
    health ready prometheus loop reload loadbalance log
                 accepted as no-ops (reloading is always on: the Corefile and the records file are
                 re-read when they change, checked at most every 100 ms when a query arrives; a
                 bad new Corefile is logged and the previous one kept)

Any other plugin -- and any option these plugins do not know -- is a LabDnsConfigError naming
it, the file and the line, and saying the fix.

The RA flag, as CoreDNS sets it: never on the server's own answers (kubernetes, multicluster,
hosts, lighthouse, REFUSED, SERVFAIL, FORMERR), so a client asking with RD sees "recursion
requested but not available", unless `header { response set ra }` is configured; a forwarded
answer keeps the upstream's flags (RA only if the upstream set it). AA is set on the
authoritative answers.

Modules, along the data flow: `records` (the records file format, `records.RECORDS_FORMAT`, also
shown by --help), `corefile` (Corefile -> plugin chains), `plugins` (one module per plugin),
`query` (what the plugins share), `server` (UDP/TCP serving, truncation, reload), `cli`.
"""

from __future__ import annotations

from crossnet.providers.lab.dns.cli import main
from crossnet.providers.lab.dns.plugins import KNOWN_PLUGINS
from crossnet.providers.lab.dns.plugins.forward import FORWARD_TIMEOUT
from crossnet.providers.lab.dns.records import (
    ClusterRecords,
    EndpointRecord,
    ImportEndpointRecord,
    ImportPortRecord,
    LabDnsConfigError,
    PodRecord,
    ServiceImportRecord,
    ServiceRecord,
    load_records,
)
from crossnet.providers.lab.dns.server import RELOAD_CHECK_INTERVAL, LabDnsServer

__all__ = [
    "FORWARD_TIMEOUT",
    "KNOWN_PLUGINS",
    "RELOAD_CHECK_INTERVAL",
    "ClusterRecords",
    "EndpointRecord",
    "ImportEndpointRecord",
    "ImportPortRecord",
    "LabDnsConfigError",
    "LabDnsServer",
    "PodRecord",
    "ServiceImportRecord",
    "ServiceRecord",
    "load_records",
    "main",
]
