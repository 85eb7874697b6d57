# A stand-in for Puppet's yumrepo type (module puppetlabs-yumrepo_core, bundled with the
# puppet-agent packages but not with Debian's puppet), for tests only: the attributes class
# shoal uses, with the same names and meanings; the provider writes the INI section to `target`.
Puppet::Type.newtype(:yumrepo) do
  @doc = 'Test stand-in for yumrepo: writes [name] into target (default /etc/yum.repos.d/NAME.repo).'
  ensurable

  newparam(:name, namevar: true) do
    desc 'The repository id (the [section]).'
  end

  newparam(:target) do
    desc 'The .repo file holding the section.'
  end

  %w[descr baseurl metalink mirrorlist enabled gpgcheck repo_gpgcheck gpgkey].each do |key|
    newproperty(key.to_sym) do
      desc "The #{key} setting ('absent' removes it)."
    end
  end
end
