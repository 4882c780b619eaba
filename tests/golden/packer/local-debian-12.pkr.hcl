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
  # zstd instead of qemu-img's default zlib: compressing took 5 s instead of 28 s in a bake here; reading
  # zstd back costs the test VM's boot about 6 s (measured on the base image), still a net gain per bake.
  # hashicorp/packer v1.6.6 builder/qemu/step_convert_disk.go L88-101 (packer-plugin-qemu v1.1.4 the same
  # file L91-104): `qemu-img convert -c <these> -O qcow2 …`.
  qemu_img_args {
    convert = ["-o", "compression_type=zstd"]
  }

  accelerator      = var.accelerator
  cpus             = var.cpus
  memory           = var.memory_mb
  headless         = true
  vnc_bind_address = "127.0.0.1"
  # The base boots by itself: no boot_command, so skip the step that would type it, and with it the
  # boot_wait (10 s by default) that holds back the first SSH attempt (hashicorp/packer v1.6.6
  # builder/qemu/step_type_boot_command.go L46-61; packer-plugin-qemu v1.1.4 the same file L66-81).
  disable_vnc = true
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
