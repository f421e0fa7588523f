"""Certificates for the secure zone cluster, made with the openssl CLI in
the run's work directory (under pki/): a CA, one certificate per node (its
zone address in subjectAltName, usable as server and as client), and a
client certificate for the harness's admin.

    pki = Pki(workdir).make_ca()
    leaf = pki.leaf("node-1", "ferry-nodes", ips=["10.77.1.11"])
    leaf.keystore   # key + certificate, one PEM file (ssl.keystore.location)
    leaf.subject    # "CN=node-1,OU=ferry-nodes,O=Ferry", as RFC 2253 prints it

Keys are ECDSA P-256, unencrypted, mode 0600. Ferry maps a client
certificate to the principal `User:<subject>` under the DEFAULT rule of
`ssl.principal.mapping.rules`, the subject printed most specific first;
`subject` is read back from the certificate with `openssl x509 -nameopt
RFC2253`, so it is the certificate's, not what we meant to write.
"""
import os
import subprocess

ORG = "Ferry"
DAYS = 2
OPENSSL_CNF = """\
[req]
distinguished_name = req_dn
prompt = no

[req_dn]
CN = unused

[ferry_ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ferry_leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = @alt_names

[alt_names]
"""


class PkiError(Exception):
    pass


def openssl(args, cwd, timeout=30):
    """Runs `openssl args...` in cwd, bounded; raises PkiError with its
    stderr on failure."""
    try:
        r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise PkiError("the openssl CLI is missing (apt-get install openssl)")
    except subprocess.TimeoutExpired:
        raise PkiError(f"openssl {' '.join(args)} took more than {timeout}s")
    if r.returncode != 0:
        raise PkiError(f"openssl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


class Leaf:
    def __init__(self, name, cert, key, keystore, subject):
        self.name = name
        self.cert = cert            # PEM certificate
        self.key = key              # PEM private key (PKCS#8)
        self.keystore = keystore    # key, then certificate: Ferry's PEM keystore
        self.subject = subject      # RFC 2253, most specific first

    @property
    def principal(self):
        """The principal Ferry gives this certificate under the DEFAULT
        mapping rule."""
        return f"User:{self.subject}"


class Pki:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "pki")
        os.makedirs(self.dir, exist_ok=True)
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        self.cnf = os.path.join(self.dir, "openssl.cnf")
        self.serial = 0x100

    def make_ca(self):
        with open(self.cnf, "w") as f:
            f.write(OPENSSL_CNF)
        openssl(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", str(DAYS), "-sha256",
                 "-subj", f"/O={ORG}/CN=ferry-zones test CA", "-config", self.cnf,
                 "-extensions", "ferry_ca_ext"], self.dir)
        os.chmod(self.ca_key, 0o600)
        return self

    def leaf(self, name, unit, ips=(), dns=()):
        """A certificate for CN=name,OU=unit,O=Ferry signed by the CA, valid
        for the addresses `ips` and names `dns` (as a server)."""
        base = os.path.join(self.dir, name)
        key, csr, crt, ext = base + ".key", base + ".csr", base + ".crt", base + ".ext"
        sans = [f"IP.{i + 1} = {ip}" for i, ip in enumerate(ips)] + \
               [f"DNS.{i + 1} = {d}" for i, d in enumerate(dns)]
        if not sans:
            sans = [f"DNS.1 = {name}"]
        with open(ext, "w") as f:
            f.write(OPENSSL_CNF + "\n".join(sans) + "\n")
        openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", f"/O={ORG}/OU={unit}/CN={name}", "-config", self.cnf],
                self.dir)
        os.chmod(key, 0o600)
        self.serial += 1
        openssl(["x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                 "-set_serial", str(self.serial), "-days", str(DAYS), "-sha256",
                 "-extfile", ext, "-extensions", "ferry_leaf_ext", "-out", crt], self.dir)
        keystore = base + ".pem"
        with open(key) as k, open(crt) as c, open(keystore, "w") as out:
            out.write(k.read() + c.read())
        os.chmod(keystore, 0o600)
        # Check what was made: chains to the CA, and its subject as printed.
        openssl(["verify", "-CAfile", self.ca, "-purpose", "sslserver", crt], self.dir)
        openssl(["verify", "-CAfile", self.ca, "-purpose", "sslclient", crt], self.dir)
        out = openssl(["x509", "-in", crt, "-noout", "-subject", "-nameopt", "RFC2253"], self.dir).strip()
        subject = out.split("=", 1)[1].strip() if out.startswith("subject=") else out
        return Leaf(name, crt, key, keystore, subject)
