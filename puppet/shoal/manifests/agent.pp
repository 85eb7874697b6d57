# @summary shoal-agent on a Squid host: repository, package, configuration and service.
#
# Writes /etc/shoal/shoal_agent.conf from the parameters below and keeps shoal-agent.service
# running and enabled; a configuration change restarts it.
#
# @param broker_host
#   RabbitMQ host the heartbeats go to.
# @param broker_port
#   Its port: 5671 for TLS (the default), 5672 for plain AMQP.
# @param use_ssl
#   Connect with TLS and authenticate with the client certificate (SASL EXTERNAL).
# @param ca_cert
#   CA certificate that signed the broker's certificate.
# @param client_cert
#   This host's certificate (its CN is the host name it may advertise).
# @param client_key
#   This host's private key.
# @param interval
#   Seconds between heartbeats.
# @param exchange
#   The AMQP exchange shoal-server reads (must match the server).
# @param squid_port
#   The port Squid listens on for clients.
# @param external_ip
#   Public address to advertise when the host is behind NAT or has a floating IP.
# @param dnsname
#   Host name to advertise instead of the reverse name of the public address.
# @param max_load
#   Outgoing KB/s at which this cache counts as fully loaded.
# @param upstream
#   What the cache serves: cvmfs, frontier or both.
# @param check_url
#   URL fetched through the local Squid before announcing; empty disables the check.
# @param logging_level
#   debug, info, warning, error or critical.
# @param log_file
#   Log file (e.g. /var/log/shoal-agent/shoal-agent.log); unset logs to the journal.
# @param manage_repo
#   Declare the shoal class (the yum repositories) too.
# @param package_ensure
#   installed, latest or a version.
# @param service_ensure
#   running or stopped.
# @param service_enable
#   Start at boot.
#
# @example
#   class { 'shoal::agent':
#     broker_host => 'shoal-broker.example.org',
#     client_cert => '/etc/grid-security/hostcert.pem',
#     client_key  => '/etc/grid-security/hostkey.pem',
#   }
class shoal::agent (
  String                          $broker_host,
  Integer[1, 65535]               $broker_port    = 5671,
  Boolean                         $use_ssl        = true,
  Pattern[/\A\//]                 $ca_cert        = '/etc/shoal/certs/ca.pem',
  Pattern[/\A\//]                 $client_cert    = '/etc/shoal/certs/agent.pem',
  Pattern[/\A\//]                 $client_key     = '/etc/shoal/certs/agent.key',
  Integer[1, 3600]                $interval       = 30,
  String                          $exchange       = 'shoal',
  Integer[1, 65535]               $squid_port     = 3128,
  Optional[String]                $external_ip    = undef,
  Optional[String]                $dnsname        = undef,
  Integer[1]                      $max_load       = 122000,
  Enum['cvmfs', 'frontier', 'both'] $upstream     = 'both',
  Optional[Pattern[/\Ahttps?:\/\//]] $check_url   = undef,
  Enum['debug', 'info', 'warning', 'error', 'critical'] $logging_level = 'info',
  Optional[Pattern[/\A\//]]     $log_file       = undef,
  Boolean                         $manage_repo    = true,
  String                          $package_ensure = 'installed',
  Enum['running', 'stopped']      $service_ensure = 'running',
  Boolean                         $service_enable = true,
) {
  if $manage_repo {
    include shoal
    File['/etc/yum.repos.d/shoal.repo'] -> Package['shoal-agent']
  }

  package { 'shoal-agent':
    ensure => $package_ensure,
  }

  file { '/etc/shoal/shoal_agent.conf':
    ensure  => file,
    owner   => 'root',
    group   => 'shoal',
    mode    => '0640',
    content => epp('shoal/shoal_agent.conf.epp', {
      'broker_host'   => $broker_host,
      'broker_port'   => $broker_port,
      'use_ssl'       => $use_ssl,
      'ca_cert'       => $ca_cert,
      'client_cert'   => $client_cert,
      'client_key'    => $client_key,
      'interval'      => $interval,
      'exchange'      => $exchange,
      'squid_port'    => $squid_port,
      'external_ip'   => $external_ip,
      'dnsname'       => $dnsname,
      'max_load'      => $max_load,
      'upstream'      => $upstream,
      'check_url'     => $check_url,
      'logging_level' => $logging_level,
      'log_file'      => $log_file,
    }),
    require => Package['shoal-agent'],
  }

  service { 'shoal-agent':
    ensure    => $service_ensure,
    enable    => $service_enable,
    subscribe => File['/etc/shoal/shoal_agent.conf'],
  }
}
