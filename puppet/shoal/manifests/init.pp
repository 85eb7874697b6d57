# @summary The Shoal yum repositories: [shoal] (releases) enabled, [shoal-dev] disabled.
#
# Declared by shoal::agent when its manage_repo is true; declare it yourself (before
# shoal::agent) to change where the packages come from. The repository file is managed as a
# whole (the same layout `make repo` writes to repo/shoal.repo), so it works with or without
# the yumrepo type (a separate module since Puppet 6 outside the puppet-agent packages).
#
# @param baseurl
#   URL of the directory holding prod/ and dev/ (what `make repo` built, served over HTTP).
# @param gpgcheck
#   Check package signatures (the repository is signed; keep it on).
# @param gpgkey
#   URL of the public key the packages are signed with.
# @param enable_dev
#   Also enable the development repository [shoal-dev].
#
# @example
#   class { 'shoal':
#     baseurl => 'https://shoal.example.org/repo',
#   }
class shoal (
  Pattern[/\A(https?|file):\/\//] $baseurl    = 'https://shoal.example.org/repo',
  Boolean                         $gpgcheck   = true,
  String                          $gpgkey     = 'https://shoal.example.org/repo/RPM-GPG-KEY-shoal',
  Boolean                         $enable_dev = false,
) {
  file { '/etc/yum.repos.d/shoal.repo':
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
}
