# Writes yumrepo resources as INI sections (see the type's comment: tests only).
Puppet::Type.type(:yumrepo).provide(:inifile) do
  desc 'Test provider: one INI section per resource, keys named as yum names them.'

  KEYS = { descr: 'name', baseurl: 'baseurl', metalink: 'metalink', mirrorlist: 'mirrorlist',
           enabled: 'enabled', gpgcheck: 'gpgcheck', repo_gpgcheck: 'repo_gpgcheck', gpgkey: 'gpgkey' }.freeze

  def path
    resource[:target] || "/etc/yum.repos.d/#{resource[:name]}.repo"
  end

  def sections
    out = {}
    current = nil
    File.readlines(path).each do |line|
      line = line.strip
      next if line.empty? || line.start_with?('#')
      if line =~ /\A\[(.+)\]\z/
        current = out[Regexp.last_match(1)] = {}
      elsif current && line.include?('=')
        key, value = line.split('=', 2)
        current[key.strip] = value.strip
      end
    end
    out
  rescue Errno::ENOENT
    {}
  end

  def exists?
    sections.key?(resource[:name])
  end

  def create
    @dirty = true
  end

  def destroy
    all = sections
    all.delete(resource[:name])
    save(all)
  end

  KEYS.each do |property, key|
    define_method(property) { sections.fetch(resource[:name], {}).fetch(key, :absent) }
    define_method("#{property}=") { |_value| @dirty = true }
  end

  def flush
    return unless @dirty && resource[:ensure] != :absent
    all = sections
    all[resource[:name]] = KEYS.each_with_object({}) do |(property, key), section|
      value = resource.should(property)
      section[key] = value.to_s unless value.nil? || value.to_s == 'absent'
    end
    save(all)
  end

  def save(all)
    text = all.map { |name, keys| "[#{name}]\n" + keys.map { |k, v| "#{k}=#{v}\n" }.join }.join("\n")
    File.write(path, text)
  end
end
