# @summary The yum repositories Shoal needs on EL: ours ([shoal] enabled, [shoal-dev] disabled) and EPEL.
#
# Declared by shoal::agent and shoal::client when their manage_repo is true; declare it yourself
# first to change where the packages come from. With the yumrepo type (puppet-agent packages, or
# the puppetlabs-yumrepo_core module) the repositories are yumrepo resources, which also take over
# an [epel] section that epel-release installed; without it (some distribution Puppet packages)
# the same content is written as whole files.
#
# @param baseurl
#   URL of the directory holding prod/ and dev/ (what `make repo` built, served over HTTP).
# @param gpgcheck
#   Check package and metadata signatures (the repository is signed; keep it on).
# @param gpgkey
#   URL of the public key our packages are signed with.
# @param enable_dev
#   Also enable the development repository [shoal-dev].
# @param manage_epel
#   Manage the EPEL repository (python3-pika, python3-maxminddb ... come from EPEL).
# @param epel_release
#   The EL major release EPEL is for (default: this host's).
# @param epel_baseurl
#   A local EPEL mirror (…/epel/9/Everything/x86_64/); unset uses Fedora's metalink.
# @param epel_gpgkey
#   Where the EPEL signing key comes from (default: Fedora's key for epel_release).
# @param reposdir
#   Directory of the .repo files.
#
# @example
#   class { 'shoal':
#     baseurl => 'https://shoal.example.org/repo',
#   }
class shoal (
  Pattern[/\A(https?|file):\/\//] $baseurl      = 'https://shoal.example.org/repo',
  Boolean                         $gpgcheck     = true,
  String                          $gpgkey       = 'https://shoal.example.org/repo/RPM-GPG-KEY-shoal',
  Boolean                         $enable_dev   = false,
  Boolean                         $manage_epel  = true,
  Integer[8]                      $epel_release = Integer($facts.dig('os', 'release', 'major').lest || { '9' }),
  Optional[Pattern[/\A(https?|file):\/\//]] $epel_baseurl = undef,
  Optional[String]                $epel_gpgkey  = undef,
  Pattern[/\A\//]                 $reposdir     = '/etc/yum.repos.d',
) {
  $check = if $gpgcheck { '1' } else { '0' }
  $repos = {
    'shoal'     => {
      'descr'    => 'Shoal',
      'baseurl'  => "${baseurl}/prod",
      'enabled'  => '1',
    },
    'shoal-dev' => {
      'descr'    => 'Shoal (development builds)',
      'baseurl'  => "${baseurl}/dev",
      'enabled'  => if $enable_dev { '1' } else { '0' },
    },
  }
  $epel_key = $epel_gpgkey.lest || { "https://dl.fedoraproject.org/pub/epel/RPM-GPG-KEY-EPEL-${epel_release}" }
  $epel = $epel_baseurl ? {
    undef   => {
      'metalink' => "https://mirrors.fedoraproject.org/metalink?repo=epel-${epel_release}&arch=\$basearch",
    },
    default => { 'baseurl' => $epel_baseurl },
  }

  if defined('yumrepo') {
    $repos.each |String $name, Hash $settings| {
      yumrepo { $name:
        ensure        => present,
        target        => "${reposdir}/shoal.repo",
        gpgcheck      => $check,
        repo_gpgcheck => if $gpgcheck { '1' } else { absent },
        gpgkey        => if $gpgcheck { $gpgkey } else { absent },
        *             => $settings,
      }
    }
    if $manage_epel {
      yumrepo { 'epel':
        ensure   => present,
        target   => "${reposdir}/epel.repo",
        descr    => "Extra Packages for Enterprise Linux ${epel_release}",
        enabled  => '1',
        gpgcheck => '1',
        gpgkey   => $epel_key,
        *        => $epel,
      }
    }
  } else {
    file { "${reposdir}/shoal.repo":
      ensure  => file,
      owner   => 'root',
      group   => 'root',
      mode    => '0644',
      content => epp('shoal/shoal.repo.epp', {
        'baseurl'    => $baseurl,
        'gpgcheck'   => $gpgcheck,
        'gpgkey'     => $gpgkey,
        'enable_dev' => $enable_dev,
      }),
    }
    if $manage_epel {
      file { "${reposdir}/epel.repo":
        ensure  => file,
        owner   => 'root',
        group   => 'root',
        mode    => '0644',
        content => epp('shoal/epel.repo.epp', {
          'release'  => $epel_release,
          'settings' => $epel,
          'gpgkey'   => $epel_key,
        }),
      }
    }
  }
}
