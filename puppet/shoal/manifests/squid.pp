# @summary A Squid forward proxy for CVMFS (and Frontier) clients, running and enabled.
#
# A minimal configuration: clients from $client_networks may fetch from the origins in
# $allowed_domains through port $port; large objects are cached on disk, small ones in memory;
# concurrent misses for one object are collapsed into one upstream fetch; the cache manager
# (load_source = squid in shoal-agent) answers only localhost.
#
# @param port
#   The port clients (and shoal-agent's check) use.
# @param client_networks
#   Networks allowed to use the proxy (your worker nodes).
# @param allowed_domains
#   Origin domains the proxy fetches from; empty allows any destination.
# @param cache_mem_mb
#   Memory cache in MB.
# @param cache_dir_mb
#   Disk cache in MB.
# @param cache_dir
#   Disk cache directory.
# @param max_object_mb
#   Largest object cached, in MB (CVMFS catalogues can be large).
#
# @example
#   class { 'shoal::squid':
#     client_networks => ['10.0.0.0/8'],
#   }
class shoal::squid (
  Integer[1, 65535] $port            = 3128,
  Array[String, 1]  $client_networks = ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
  Array[String]     $allowed_domains = ['.cern.ch', '.fnal.gov', '.opensciencegrid.org', '.gridpp.rl.ac.uk'],
  Integer[1]        $cache_mem_mb    = 256,
  Integer[100]      $cache_dir_mb    = 20000,
  Pattern[/\A\//]   $cache_dir       = '/var/spool/squid',
  Integer[1]        $max_object_mb   = 1024,
) {
  package { 'squid':
    ensure => installed,
  }

  file { '/etc/squid/squid.conf':
    ensure  => file,
    owner   => 'root',
    group   => 'squid',
    mode    => '0640',
    content => epp('shoal/squid.conf.epp', {
      'port'            => $port,
      'client_networks' => $client_networks,
      'allowed_domains' => $allowed_domains,
      'cache_mem_mb'    => $cache_mem_mb,
      'cache_dir_mb'    => $cache_dir_mb,
      'cache_dir'       => $cache_dir,
      'max_object_mb'   => $max_object_mb,
    }),
    require => Package['squid'],
  }

  service { 'squid':
    ensure    => running,
    enable    => true,
    subscribe => File['/etc/squid/squid.conf'],
  }
}
