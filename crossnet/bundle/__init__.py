"""The results bundle a vendor hands back, and `crossnet bundle verify` (issue 13, item 8).

Every `pytest suites/` run that wrote its reports also writes `reports/crossnet-results-<run-id>.tar.gz`
(0600), flat and small:

- `junit.xml`, `matrix.json`, `matrix.html`, `summary.md`: the run's reports;
- `discovery.json`: matrix.json without its cells (run info, plumbing and discovery facts);
- `profile/<file>` and `kind-configs/NN-<file>`: the profile and kind configs the cells came from;
- for existing clusters (`--provider existing`, no kind config) instead: `topology.json`, the
  topology the controller discovered and built the cells from (as recorded in the state file),
  `discovered.json`, the discovery facts with their sources (matrix.json's `run.discovery` but the
  pre-flight rows), `preflight.json`, those rows (`ran: false` under --skip-preflight), and
  `clusterset.yaml`, the cluster-set file when the run was given one;
- `cluster-set.json`: the run's `model.ClusterSet` (addresses, agents, Services);
- `observations.json`: each judged cell's raw `model.Observation`: the first probe and, when the
  re-probe made it `flaky`, the re-probe (the runner keeps no re-probe that failed too);
- `bundle.json`: run id, crossnet's version, vendor metadata (--organization, --product,
  --product-version, --url, as mcs-api's conformance report has), the provider, the profile's (and
  an existing-clusters run's topology's) SHA-256;
- `manifest.sha256`: every other file, in `sha256sum -c` format.

Only these files are copied, each scanned for credential-like text (a PEM key or certificate,
kubeconfig credential fields, tokens, passwords): a match means no bundle, never a leaked secret.

`crossnet bundle verify FILE` treats the tar as hostile (read in memory, never extracted; only plain
relative names of regular files; bounded sizes), checks the manifest, then rebuilds the cells from
the bundled kind configs and profile (`options.load_setup`) or, for existing clusters, from the
bundled topology and profile (`options.setup_from`), puts them on the bundled cluster set
(`live.live_cell`) and re-judges each from its raw observations (`judge.judge`): a verdict edited by
hand is caught even when the manifest was regenerated. Exit 0 verified, 1 differences or tampering,
2 not a bundle. Bundles are not signed (no comparable tool signs its results): verify proves that
every verdict follows from the bundled observations, not who made them.

Modules: `archive` (writing, hostile reading, the manifest, the credential scan), `verify`
(re-judging, the command line, bundles for `crossnet diff`), `hooks` (the pytest side: vendor
options, raw observations on each cell's report, the bundle at session end; loaded by
crossnet.plugin, never imported by the command line).
"""

from crossnet.bundle.archive import (
    BUNDLE_SCHEMA,
    MANIFEST,
    BundleError,
    Unusable,
    load_matrix_or_bundle,
    read_bundle,
    write_bundle,
)
from crossnet.bundle.verify import register_cli, run_cli, verify_bundle

__all__ = [
    "BUNDLE_SCHEMA",
    "MANIFEST",
    "BundleError",
    "Unusable",
    "load_matrix_or_bundle",
    "read_bundle",
    "register_cli",
    "run_cli",
    "verify_bundle",
    "write_bundle",
]
