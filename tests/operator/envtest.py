"""A real control plane for the tests, the envtest way: `etcd` and `kube-apiserver` from $KUBEBUILDER_ASSETS, started
on 127.0.0.1 in a temporary directory and stopped afterwards.

The API server serves only https, with a certificate made here (openssl), one static bearer token in group
system:masters for the tests and the operator, and a service-account key pair of its own. No controller-manager or
kubelet runs: objects are stored, validated (OpenAPI, CEL, RBAC objects) and watched exactly as on a cluster, but no
Deployment gets pods and nothing is garbage-collected.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ASSETS_VARIABLE = "KUBEBUILDER_ASSETS"
BINARIES = ("etcd", "kube-apiserver")


def missing_assets() -> str | None:
    """Why the control plane cannot start here, or None when it can."""
    assets = os.environ.get(ASSETS_VARIABLE)
    if not assets:
        return f"${ASSETS_VARIABLE} is unset: no etcd and kube-apiserver binaries to run a real API server"
    absent = [name for name in BINARIES if not os.access(Path(assets) / name, os.X_OK)]
    if absent:
        return f"${ASSETS_VARIABLE}={assets} lacks executable {', '.join(absent)}"
    if kubectl() is None:
        return "no kubectl ($KUBECTL, PATH or .tools/bin)"
    if shutil.which("openssl") is None:
        return "no openssl to make the API server's certificate"
    return None


def kubectl() -> str | None:
    root = Path(__file__).resolve().parents[2]
    local = root / ".tools" / "bin" / "kubectl"
    return os.environ.get("KUBECTL") or shutil.which("kubectl") or (str(local) if local.is_file() else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ControlPlane:
    server: str
    token: str
    ca_file: Path
    kubeconfig: Path

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        binary = kubectl()
        assert binary is not None
        return subprocess.run(
            [binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _certificates(directory: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost signed by it, and a service-account key pair."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=envtest-ca",
             "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"))  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", str(directory / "apiserver.key"), "-out", str(directory / "apiserver.csr"))  # fmt: skip
    _openssl("x509", "-req", "-in", str(directory / "apiserver.csr"), "-CA", str(directory / "ca.crt"),
             "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-days", "1",
             "-extfile", str(directory / "san.cnf"), "-out", str(directory / "apiserver.crt"))  # fmt: skip
    _openssl("genrsa", "-out", str(directory / "sa.key"), "2048")
    _openssl("rsa", "-in", str(directory / "sa.key"), "-pubout", "-out", str(directory / "sa.pub"))


def _wait_ready(server: str, token: str, ca_file: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    request = urllib.request.Request(server + "/readyz", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(request, context=context, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError("kube-apiserver did not become ready")


def checks_cel_rules() -> bool:
    """Whether the kube-apiserver of $KUBEBUILDER_ASSETS checks CRD validation rules (CEL): not one from before their
    beta (1.25), where they sit behind an alpha gate and lack parts of the language the CRD uses (`oldSelf`)."""
    binary = Path(os.environ[ASSETS_VARIABLE]) / "kube-apiserver"
    shown = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60).stdout
    return "CustomResourceValidationExpressions=true|false (ALPHA" not in shown


@contextlib.contextmanager
def control_plane(directory: Path, timeout: float = 60.0) -> Iterator[ControlPlane]:
    assets = Path(os.environ[ASSETS_VARIABLE])
    _certificates(directory)
    token = secrets.token_hex(16)
    (directory / "tokens.csv").write_text(f'{token},envtest-admin,envtest-admin,"system:masters"\n')
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    logs = [open(directory / "etcd.log", "wb"), open(directory / "kube-apiserver.log", "wb")]  # noqa: SIM115
    etcd = subprocess.Popen(
        [str(assets / "etcd"), "--data-dir", str(directory / "etcd"), "--listen-client-urls", etcd_url,
         "--advertise-client-urls", etcd_url, "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"default=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync"],
        stdout=logs[0], stderr=subprocess.STDOUT,
    )  # fmt: skip
    apiserver = subprocess.Popen(
        [str(assets / "kube-apiserver"), "--etcd-servers", etcd_url, "--bind-address", "127.0.0.1",
         "--advertise-address", "127.0.0.1", "--secure-port", str(api_port),
         "--tls-cert-file", str(directory / "apiserver.crt"),
         "--tls-private-key-file", str(directory / "apiserver.key"),
         "--client-ca-file", str(directory / "ca.crt"), "--token-auth-file", str(directory / "tokens.csv"),
         "--authorization-mode", "RBAC", "--service-cluster-ip-range", "10.0.0.0/24",
         "--service-account-issuer", "https://127.0.0.1", "--service-account-key-file", str(directory / "sa.pub"),
         "--service-account-signing-key-file", str(directory / "sa.key"),
         "--disable-admission-plugins", "ServiceAccount", "--cert-dir", str(directory / "certs")],
        stdout=logs[1], stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = f"https://127.0.0.1:{api_port}"
    ca_file = directory / "ca.crt"
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: envtest\n"
        f"clusters: [{{name: envtest, cluster: {{server: '{server}', certificate-authority: '{ca_file}'}}}}]\n"
        f"users: [{{name: envtest, user: {{token: '{token}'}}}}]\n"
        "contexts: [{name: envtest, context: {cluster: envtest, user: envtest}}]\n"
    )
    try:
        _wait_ready(server, token, ca_file, apiserver, timeout)
        yield ControlPlane(server=server, token=token, ca_file=ca_file, kubeconfig=kubeconfig)
    finally:
        for process in (apiserver, etcd):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
