# @summary The agent's TLS files, as issued by the Shoal CA (shoal-ca), at the paths docs/security.md uses.
#
# shoal-ca writes ca.crt, agents/NAME.crt and agents/NAME.key on the CA machine; this class puts
# them on the Squid host: the CA and the certificate world-readable, the key readable by the
# agent's user only (0600). Give each file as content (e.g. file() of a copy in a site module,
# the key as Sensitive from Hiera eyaml) or as a source URL (puppet:///...). A file given
# neither way is not managed (put it there yourself); the paths still go into the agent config.
#
# @param ca_cert
#   Path of the Shoal CA certificate (ca.crt).
# @param client_cert
#   Path of this host's certificate (agents/NAME.crt; its CN is the host name it may advertise).
# @param client_key
#   Path of its private key (agents/NAME.key).
# @param ca_cert_content
#   PEM text of ca.crt.
# @param client_cert_content
#   PEM text of the agent certificate.
# @param client_key_content
#   PEM text of the private key; prefer Sensitive (not shown in reports or diffs).
# @param ca_cert_source
#   Alternative to ca_cert_content: a file source URL.
# @param client_cert_source
#   Alternative to client_cert_content.
# @param client_key_source
#   Alternative to client_key_content.
# @param key_owner
#   Owner of the key: the user shoal-agent runs as.
# @param key_group
#   Group of the key.
#
# @example
#   class { 'shoal::certs':
#     ca_cert_content     => file('site_shoal/ca.crt'),
#     client_cert_content => file("site_shoal/agents/${facts['networking']['fqdn']}.crt"),
#     client_key_content  => Sensitive(lookup('shoal::agent_key')),
#   }
class shoal::certs (
  Pattern[/\A\//]                          $ca_cert             = '/etc/shoal/ca.crt',
  Pattern[/\A\//]                          $client_cert         = '/etc/shoal/agent.crt',
  Pattern[/\A\//]                          $client_key          = '/etc/shoal/agent.key',
  Optional[String]                         $ca_cert_content     = undef,
  Optional[String]                         $client_cert_content = undef,
  Optional[Variant[String, Sensitive[String]]] $client_key_content = undef,
  Optional[String]                         $ca_cert_source      = undef,
  Optional[String]                         $client_cert_source  = undef,
  Optional[String]                         $client_key_source   = undef,
  String                                   $key_owner           = 'shoal',
  String                                   $key_group           = 'shoal',
) {
  $pem = /-----BEGIN CERTIFICATE-----/
  [[$ca_cert, $ca_cert_content, $ca_cert_source], [$client_cert, $client_cert_content, $client_cert_source]].each |$spec| {
    [$path, $content, $source] = $spec
    if $content and $content !~ $pem {
      fail("shoal::certs: the content for ${path} is not a PEM certificate")
    }
    if $content or $source {
      file { $path:
        ensure  => file,
        owner   => 'root',
        group   => 'root',
        mode    => '0644',
        content => $content,
        source  => $source,
      }
    }
  }
  if $client_key_content or $client_key_source {
    $key = $client_key_content ? {
      undef     => undef,
      Sensitive => $client_key_content,
      default   => Sensitive($client_key_content),
    }
    file { $client_key:
      ensure    => file,
      owner     => $key_owner,
      group     => $key_group,
      mode      => '0600',
      content   => $key,
      source    => $client_key_source,
      show_diff => false,
    }
  }
}
