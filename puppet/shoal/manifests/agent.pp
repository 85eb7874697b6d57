# @summary shoal-agent on a Squid host: repository, package, configuration and service.
#
# Writes /etc/shoal/shoal_agent.conf from the parameters below and keeps shoal-agent.service
# running and enabled; a change of the configuration or of a certificate restarts it. The TLS
# files are the ones the Shoal CA issued (`shoal-ca agent NAME`, see docs/security.md), at the
# paths security.md uses; given as content or source they are managed too (class shoal::certs).
# Squid is started before the agent, whichever class manages Service[$squid_service].
#
# @param broker_host
#   RabbitMQ host the heartbeats go to.
# @param broker_port
#   Its port: 5671 for TLS (the default), 5672 for plain AMQP.
# @param use_ssl
#   Connect with TLS and authenticate with the client certificate (SASL EXTERNAL).
# @param ca_cert
#   The Shoal CA certificate (shoal-ca's ca.crt): it signed the broker's certificate.
# @param client_cert
#   This host's certificate from shoal-ca (agents/NAME.crt; its CN is the host name it may advertise).
# @param client_key
#   Its private key (agents/NAME.key), mode 0600, owner shoal.
# @param ca_cert_content
#   PEM text of ca.crt, to manage the file (see shoal::certs); unset: not managed.
# @param client_cert_content
#   PEM text of the agent certificate.
# @param client_key_content
#   PEM text of the key, best as Sensitive (Hiera eyaml).
# @param ca_cert_source
#   Alternative to ca_cert_content: a file source (puppet:///modules/...).
# @param client_cert_source
#   Alternative to client_cert_content.
# @param client_key_source
#   Alternative to client_key_content.
# @param squid_service
#   Name of the Squid service started before the agent (frontier-squid at many WLCG sites).
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
# @example Certificates issued by the Shoal CA, copied into a site module; the key from Hiera eyaml
#   class { 'shoal::agent':
#     broker_host         => 'shoal-broker.example.org',
#     ca_cert_content     => file('site_shoal/ca.crt'),
#     client_cert_content => file('site_shoal/agents/squid.site.example.crt'),
#     client_key_content  => Sensitive(lookup('site_shoal::agent_key')),
#   }
class shoal::agent (
  String                          $broker_host,
  Integer[1, 65535]               $broker_port    = 5671,
  Boolean                         $use_ssl        = true,
  Pattern[/\A\//]                 $ca_cert        = '/etc/shoal/ca.crt',
  Pattern[/\A\//]                 $client_cert    = '/etc/shoal/agent.crt',
  Pattern[/\A\//]                 $client_key     = '/etc/shoal/agent.key',
  Optional[String]                $ca_cert_content     = undef,
  Optional[String]                $client_cert_content = undef,
  Optional[Variant[String, Sensitive[String]]] $client_key_content = undef,
  Optional[String]                $ca_cert_source      = undef,
  Optional[String]                $client_cert_source  = undef,
  Optional[String]                $client_key_source   = undef,
  String                          $squid_service  = 'squid',
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
    Class['shoal'] -> Package['shoal-agent']
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

  class { 'shoal::certs':
    ca_cert             => $ca_cert,
    client_cert         => $client_cert,
    client_key          => $client_key,
    ca_cert_content     => $ca_cert_content,
    client_cert_content => $client_cert_content,
    client_key_content  => $client_key_content,
    ca_cert_source      => $ca_cert_source,
    client_cert_source  => $client_cert_source,
    client_key_source   => $client_key_source,
    require             => Package['shoal-agent'],  # the package creates the shoal user and /etc/shoal
  }

  service { 'shoal-agent':
    ensure    => $service_ensure,
    enable    => $service_enable,
    subscribe => [File['/etc/shoal/shoal_agent.conf'], Class['shoal::certs']],
  }

  # The agent checks its Squid before announcing it: start Squid first, whoever manages it
  # (shoal::squid or a site's own module). A collector, so nothing breaks when there is none.
  Service <| title == $squid_service |> -> Service['shoal-agent']
}
