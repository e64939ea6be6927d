"""The `existing` provider: clusters somebody else built, reached through a kubeconfig, never changed
outside crossnet's own namespace (docs/ARCHITECTURE.md, "The provider seam").

    flags.py      the options (merged into crossnet.options; this package's commands use them too)
    settings.py   options -> ExistingSettings (checked; recorded in state.json)
    clusterset.py which clusters: --context NAME=CONTEXT or a cluster-set file, with hints
    kube.py       the REST seam (`KubeApi`) and `ExistingKube`, what crossnet asks of one cluster
    client.py     `KubeApi` on the kubernetes client, from a kubeconfig context (kubeconfig errors)
    discovery.py  read-only discovery of each cluster (nodes, CIDRs, domain, DNS, CNI, layers)
    sample.py     discovered facts -> the topology cells are built from (--nodes N), its JSON
    session.py    what the plugin and the CLI call: discover once, the recorded topology, records
    rbac.py       the rights crossnet uses (`crossnet rbac` prints them; preflight checks them)
    preflight.py  `crossnet preflight`: rights, dry-run creates, CRDs, CIDR overlap, leftovers
    draft.py      `crossnet discover`'s draft profile and a profile's `requires:` check
    debug.py      --node-evidence: privileged debug pods, the only way crossnet sees a node here
    provider.py   the provider: up (discover, preflight), agents in one namespace, down
    cli.py        `crossnet preflight|rbac|discover|images` and `down --context`

Tested against tests/fake_kube.py, an API server that grants exactly what `crossnet rbac` prints
(tests/test_existing_provider.py); `ClientKubeApi` is also driven over HTTP against that fake. Only a
real cluster (the nightly vendor job) proves admission, image pulls and the agents on real nodes.
"""
