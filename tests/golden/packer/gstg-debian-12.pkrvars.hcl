artifact_source         = "upstream"
builder_labels          = {
  bakery-role = "builder"
  environment = "gstg"
  owner       = "infrasec"
}
candidate_family        = "gl-osquery-debian-12-candidate"
disk_size_gb            = 20
disk_type               = "pd-balanced"
image_description       = "osquery 5.23.1-1.linux + Fluentd to Pub/Sub, debian-12, baked by osquery-bakery 0.1.0 (upstream)"
image_labels            = {
  artifact-source = "upstream"
  bakery-env      = "gstg"
  bakery-variant  = "debian-12"
  bakery-version  = "0_1_0"
  environment     = "gstg"
  fluent-version  = "6_0_0-1"
  osquery-version = "5_23_1-1_linux"
  owner           = "infrasec"
}
image_storage_locations = ["us"]
integrity_monitoring    = true
machine_type            = "e2-standard-2"
network                 = "gstg"
omit_external_ip        = true
project_id              = "gitlab-staging-1"
provision_env           = [
  "BAKERY_ARTIFACTS=/tmp/bakery/artifacts",
  "BAKERY_ARTIFACT_SOURCE=upstream",
  "BAKERY_BUILD_USER=packer",
  "BAKERY_FILES=/tmp/bakery/files",
  "FLUENT_KEY_FINGERPRINT=B40948B6A3B80E90F40E841F977D7A0943FA320E",
  "FLUENT_KEY_URL=https://fluentd.cdn.cncf.io/GPG-KEY-fluent-package",
  "FLUENT_PACKAGE=fluent-package",
  "FLUENT_PACKAGE_VERSION=6.0.0-1",
  "FLUENT_PLUGIN=fluent-plugin-gcloud-pubsub-custom",
  "FLUENT_PLUGIN_VERSION=1.6.0",
  "OSQUERY_KEY_FINGERPRINT=1484120AC4E9F8A1A577AEEE97A80C63C9D8B80B",
  "OSQUERY_KEY_URL=https://pkg.osquery.io/deb/pubkey.gpg",
  "OSQUERY_PACKAGE_VERSION=5.23.1-1.linux",
]
provision_scripts       = [
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
scopes                  = ["https://www.googleapis.com/auth/cloud-platform"]
secure_boot             = true
service_account_email   = "image-builder@gitlab-staging-1.iam.gserviceaccount.com"
source_image_family     = "debian-12"
source_image_project    = "debian-cloud"
ssh_timeout             = "10m"
ssh_username            = "packer"
subnetwork              = "gstg-image-builder"
use_iap                 = true
vtpm                    = true
zone                    = "us-east1-c"
