"""Run the rendered Kubernetes pod specs of the dev overlay in podman containers.

`make test-deploy` (``python -m tools.podkube``) renders ``deploy/k8s/overlays/dev`` with
kustomize and runs the pod templates it holds — the migrate Job, each Deployment, the sweep
CronJob's job template — as a kubelet would, as far as one host without Kubernetes allows.
``render`` reads the objects and resolves environment and addresses, ``pods`` turns a
container spec into ``podman run`` and probes it, ``tokens`` plays the token issuer, and
``__main__`` is the scenario. What it cannot check is listed in ``__main__``'s docstring.

`make test-prod-shape` (``python -m tools.podkube.prodshape``) runs the prod overlay with the
same pieces, extended: ``replicas`` (a slot per pod), ``proxy`` (the kube-proxy stand-in),
``natscluster`` (the overlay's three NATS nodes), ``certs`` (the CA Issuer), ``prodrun``,
``load``, ``faults``, ``verify`` and ``cpu``.
"""
