# @summary shoal-client on a worker node: package, and its schedule (systemd timer or cron).
#
# The shoal-client RPM ships shoal-client.service + shoal-client.timer (every 30 minutes, with
# RandomizedDelaySec so a site's workers do not all ask at once) and /etc/cron.d/shoal-client
# with its line commented out. This class enables exactly one of the two.
#
# @param run_with
#   timer (the default): enable shoal-client.timer; cron: the cron line (with a per-host
#   splay) instead; none: neither (run shoal-client yourself).
# @param server_url
#   The server's /nearest URL; when set, /etc/shoal/shoal_client.conf is managed with it.
# @param cvmfs_config
#   The CVMFS file shoal-client rewrites (only used with server_url).
# @param manage_repo
#   Declare the shoal class (the yum repositories) too.
# @param package_ensure
#   installed, latest or a version.
#
# @example
#   class { 'shoal::client':
#     server_url => 'http://shoal.example.org/nearest',
#   }
class shoal::client (
  Enum['timer', 'cron', 'none']             $run_with       = 'timer',
  Optional[Pattern[/\Ahttps?:\/\//]]        $server_url     = undef,
  Pattern[/\A\//]                           $cvmfs_config   = '/etc/cvmfs/default.local',
  Boolean                                   $manage_repo    = true,
  String                                    $package_ensure = 'installed',
) {
  if $manage_repo {
    include shoal
    Class['shoal'] -> Package['shoal-client']
  }

  package { 'shoal-client':
    ensure => $package_ensure,
  }

  if $server_url {
    file { '/etc/shoal/shoal_client.conf':
      ensure  => file,
      owner   => 'root',
      group   => 'root',
      mode    => '0644',
      content => epp('shoal/shoal_client.conf.epp', {
        'server_url'   => $server_url,
        'cvmfs_config' => $cvmfs_config,
      }),
      require => Package['shoal-client'],
    }
  }

  # Both are always managed, so switching run_with never leaves the old schedule running too.
  $timer = $run_with == 'timer'
  service { 'shoal-client.timer':
    ensure  => if $timer { 'running' } else { 'stopped' },
    enable  => $timer,
    require => Package['shoal-client'],
  }

  file { '/etc/cron.d/shoal-client':
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('shoal/shoal-client.cron.epp', { 'enabled' => $run_with == 'cron' }),
    require => Package['shoal-client'],
  }
}
