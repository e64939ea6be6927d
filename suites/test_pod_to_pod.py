"""Pod-to-pod: from the pod and from the host (hostNetwork) of every node, to the pod on every
node of every cluster (same node, same cluster, peer cluster), over TCP, UDP and ICMP.

The cells and their expectations come from the kind configs and the profile; see
`crossnet/builders/` and `profiles/`.
"""

SUITE = "pod-to-pod"


def test_pod_to_pod(cell, judge_cell):
    judge_cell(cell)
