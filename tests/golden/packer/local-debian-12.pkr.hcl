# Rendered by osquery-bakery for environment local, variant debian-12: do not edit.
# Target: local QEMU (Packer's qemu builder); the same provisioning as the GCE target.

variable "accelerator" {
  type = string
}

variable "artifact_source" {
  type = string
}

variable "base_image" {
  type = string
}

variable "base_image_checksum" {
  type = string
}

variable "cpus" {
  type = number
}

variable "disk_size" {
  type = string
}

variable "image_name" {
  type = string
}

variable "input_fingerprint" {
  type = string
}

variable "memory_mb" {
  type = number
}

variable "output_directory" {
  type = string
}

variable "provision_env" {
  type = list(string)
}

variable "provision_scripts" {
  type = list(string)
}

variable "ssh_private_key_file" {
  type = string
}

variable "ssh_timeout" {
  type = string
}

variable "ssh_username" {
  type = string
}



source "qemu" "osquery" {
  iso_url          = var.base_image
  iso_checksum     = var.base_image_checksum
  disk_image       = true
  use_backing_file = false
  disk_size        = var.disk_size
  format           = "qcow2"
  disk_interface   = "virtio"
  # Keep the artifact small: pass guest TRIMs through, drop zeroes, compress the output.
  disk_discard       = "unmap"
  disk_detect_zeroes = "unmap"
  disk_compression   = true
  skip_compaction    = false

  accelerator      = var.accelerator
  cpus             = var.cpus
  memory           = var.memory_mb
  headless         = true
  vnc_bind_address = "127.0.0.1"
  # Packer's default port forward listens on every interface: bind SSH to loopback only.
  qemuargs = [
    ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
    ["-cpu", "max"],
  ]

  communicator         = "ssh"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = var.ssh_timeout
  shutdown_command     = "sudo systemctl poweroff"
  shutdown_timeout     = "2m"

  output_directory = var.output_directory
  vm_name          = "${var.image_name}.qcow2"
}

build {
  sources = ["source.qemu.osquery"]

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
    scripts          = var.provision_scripts
    environment_vars = var.provision_env
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} bash '{{ .Path }}'"
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
