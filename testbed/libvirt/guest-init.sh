#!/bin/sh
# Init of the tier C test guest. Prints on the serial console (one line each):
#   BOOTED
#   PCI-ADD <bdf> <vendor:device> <driver> <netdev> <mac>   (once the device has a driver, or after 2 s)
#   PCI-DEL <bdf>
# "-" stands for a missing field. Tests read these lines from the console log file.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m" 2>/dev/null
done
mkdir -p /run/seen

describe() {
  d=$1
  ven=$(cat "$d/vendor"); dev=$(cat "$d/device")
  drv=-; [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
  net=-; mac=-
  for n in "$d"/net/* "$d"/virtio*/net/*; do
    [ -e "$n/address" ] || continue
    net=${n##*/}; mac=$(cat "$n/address")
  done
  echo "${ven#0x}:${dev#0x} $drv $net $mac"
}

first=1
while :; do
  for d in /sys/bus/pci/devices/*; do
    bdf=${d##*/}
    desc=$(describe "$d")
    set -- $desc
    if [ -e "/run/seen/$bdf" ]; then
      # A device unplugged and another plugged at the same address between two scans: report the
      # old one gone once the new one has its MAC.
      set -- $(cat "/run/seen/$bdf")
      old_mac=$4
      set -- $desc
      [ "$4" = - ] || [ "$4" = "$old_mac" ] && continue
      echo "PCI-DEL $bdf"
      rm -f "/run/seen/$bdf"
    fi
    # A hot-plugged NIC is reported once its driver has created the netdev, so the line carries the MAC.
    waited=$(cat "/run/seen/.$bdf" 2>/dev/null || echo 0)
    if [ "$first" = 1 ] || [ "$4" != - ] || [ "$waited" -ge 10 ]; then
      echo "PCI-ADD $bdf $desc"
      echo "$desc" > "/run/seen/$bdf"
      rm -f "/run/seen/.$bdf"
    else
      echo $((waited + 1)) > "/run/seen/.$bdf"
    fi
  done
  for s in /run/seen/*; do
    bdf=${s##*/}
    [ -e "/sys/bus/pci/devices/$bdf" ] && continue
    echo "PCI-DEL $bdf"
    rm -f "$s" "/run/seen/.$bdf"
  done
  [ "$first" = 1 ] && echo BOOTED
  first=0
  sleep 0.2
done
