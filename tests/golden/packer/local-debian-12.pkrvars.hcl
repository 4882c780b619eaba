artifact_source   = "stand-in"
cpus              = 2
disk_size         = "4G"
memory_mb         = 2048
provision_env     = [
  "BAKERY_ARTIFACTS=/tmp/bakery/artifacts",
  "BAKERY_ARTIFACT_SOURCE=stand-in",
  "BAKERY_BUILD_USER=packer",
  "BAKERY_FILES=/tmp/bakery/files",
  "FLUENT_KEY_FINGERPRINT=B40948B6A3B80E90F40E841F977D7A0943FA320E",
  "FLUENT_KEY_URL=https://fluentd.cdn.cncf.io/GPG-KEY-fluent-package",
  "FLUENT_PACKAGE=fluent-package",
  "FLUENT_PACKAGE_VERSION=0.0.0~standin",
  "FLUENT_PLUGIN=fluent-plugin-gcloud-pubsub-custom",
  "FLUENT_PLUGIN_VERSION=1.6.0",
  "OSQUERY_KEY_FINGERPRINT=1484120AC4E9F8A1A577AEEE97A80C63C9D8B80B",
  "OSQUERY_KEY_URL=https://pkg.osquery.io/deb/pubkey.gpg",
  "OSQUERY_PACKAGE_VERSION=0.0.0~standin",
]
provision_scripts = [
  "provision/10-prereqs.sh",
  "provision/20-repos.sh",
  "provision/30-packages.sh",
  "provision/40-fluent-plugin.sh",
  "provision/60-files.sh",
  "provision/65-apparmor.sh",
  "provision/70-services.sh",
  "provision/80-identity.sh",
  "provision/90-seal.sh",
]
ssh_timeout       = "10m"
ssh_username      = "packer"
