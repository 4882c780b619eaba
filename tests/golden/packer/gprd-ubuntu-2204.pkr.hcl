# Rendered by osquery-bakery for environment gprd, variant ubuntu-2204: do not edit.
# Target: Google Compute Engine (Packer's googlecompute builder). The image goes into the CANDIDATE
# family only; it reaches the production family after the image tests pass (invoke bake / promote).

variable "artifact_source" {
  type = string
}

variable "builder_labels" {
  type = map(string)
}

variable "candidate_family" {
  type = string
}

variable "disk_size_gb" {
  type = number
}

variable "disk_type" {
  type = string
}

variable "expires" {
  type = string
}

variable "git_sha" {
  type = string
}

variable "image_description" {
  type = string
}

variable "image_labels" {
  type = map(string)
}

variable "image_name" {
  type = string
}

variable "image_storage_locations" {
  type = list(string)
}

variable "input_fingerprint" {
  type = string
}

variable "integrity_monitoring" {
  type = bool
}

variable "machine_type" {
  type = string
}

variable "network" {
  type = string
}

variable "omit_external_ip" {
  type = bool
}

variable "project_id" {
  type = string
}

variable "provision_env" {
  type = list(string)
}

variable "provision_scripts" {
  type = list(string)
}

variable "run_id" {
  type = string
}

variable "scopes" {
  type = list(string)
}

variable "secure_boot" {
  type = bool
}

variable "service_account_email" {
  type = string
}

variable "source_image" {
  type = string
}

variable "source_image_family" {
  type = string
}

variable "source_image_project" {
  type = string
}

variable "ssh_timeout" {
  type = string
}

variable "ssh_username" {
  type = string
}

variable "subnetwork" {
  type = string
}

variable "use_iap" {
  type = bool
}

variable "vtpm" {
  type = bool
}

variable "zone" {
  type = string
}


# The image identity (bakery/identity.py): known only when a bake starts, so it is passed with -var and is
# not part of the rendered tree or its input fingerprint. Empty for `packer validate`; provision/80-identity.sh
# refuses to bake without it.
variable "image_identity" {
  type    = string
  default = ""
}

variable "image_identity_osquery" {
  type    = string
  default = ""
}


# The bake pins the exact source image it resolved from the public family (it is part of the input
# fingerprint); the family itself is used only when none was given (e.g. packer validate).
source "googlecompute" "osquery" {
  project_id              = var.project_id
  zone                    = var.zone
  source_image            = var.source_image
  source_image_family     = var.source_image == "" ? var.source_image_family : ""
  source_image_project_id = [var.source_image_project]
  machine_type            = var.machine_type
  network                 = var.network
  subnetwork              = var.subnetwork
  omit_external_ip        = var.omit_external_ip
  use_internal_ip         = var.omit_external_ip
  use_iap                 = var.use_iap
  service_account_email   = var.service_account_email
  scopes                  = var.scopes
  disk_size               = var.disk_size_gb
  disk_type               = var.disk_type

  enable_secure_boot          = var.secure_boot
  enable_vtpm                 = var.vtpm
  enable_integrity_monitoring = var.integrity_monitoring

  image_name              = var.image_name
  image_family            = var.candidate_family
  image_description       = var.image_description
  image_storage_locations = var.image_storage_locations
  image_labels = merge(var.image_labels, {
    input-fingerprint = substr(var.input_fingerprint, 0, 63)
    git-sha           = var.git_sha
    # The run's labels: `invoke reap` deletes a candidate a killed run left once this expiry passes.
    bakery-run-id  = var.run_id
    bakery-expires = var.expires
  })
  # Builder VM: labelled with the run id and an expiry so leftovers of a killed run can be found and reaped.
  labels = merge(var.builder_labels, {
    bakery-run-id  = var.run_id
    bakery-expires = var.expires
  })
  metadata = {
    block-project-ssh-keys = "true"
    enable-oslogin         = "false"
  }
  # Unset, the plugin imports its key into the caller's OS Login profile and logs in as that profile's user
  # whenever the PROJECT has enable-oslogin=TRUE, ignoring the instance's "false" above, so the key the guest
  # agent installs from ssh-keys would not match the user (packer-plugin-googlecompute v1.2.7
  # builder/googlecompute/step_import_os_login_ssh_key.go lines 43-51).
  use_os_login = false

  communicator = "ssh"
  ssh_username = var.ssh_username
  ssh_timeout  = var.ssh_timeout
}

build {
  sources = ["source.googlecompute.osquery"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/bakery/files /tmp/bakery/artifacts"]
  }

  provisioner "file" {
    source      = "files/"
    destination = "/tmp/bakery/files"
  }

  provisioner "file" {
    source      = "artifacts/"
    destination = "/tmp/bakery/artifacts"
  }

  provisioner "shell" {
    scripts = var.provision_scripts
    # provision/80-identity.sh (before the seal) writes the image identity from these runtime variables.
    environment_vars = concat(var.provision_env, [
      "BAKERY_IDENTITY=${var.image_identity}",
      "BAKERY_IDENTITY_OSQUERY=${var.image_identity_osquery}",
    ])
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} bash '{{ .Path }}'"
  }

  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = true
    custom_data = {
      image_name        = var.image_name
      artifact_source   = var.artifact_source
      input_fingerprint = var.input_fingerprint
    }
  }

}
