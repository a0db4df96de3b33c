# A boot check without a daemon: modules, network, tools.
check smoke-nbd-dev test -b /dev/nbd0
check smoke-nvme-fabrics test -c /dev/nvme-fabrics
check smoke-eth0 sh -c 'ip addr show eth0 | grep -q 10.0.2.15'
check smoke-tools sh -c 'nvme version && mkfs.ext4 -V && mkfs.xfs -V && /usr/bin/blkdiscard -V && /usr/bin/dd --version'
return $failed
